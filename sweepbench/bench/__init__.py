"""The sweep harness: what llama-sweep-bench does, engine-agnostic.

* ``plan``: the windows, TG length and repetitions, checked before anything is loaded;
* ``tokens``: the seeded token streams (one per seed, window, phase and repetition);
* ``loop``: warmup and the timed windows, driving engines only through ``engines.base.Engine``;
* ``rows``: repetition samples -> medians, spread and roofline figures (the row records of our JSONL);
* ``memory``: will it fit (before loading), RSS high-water mark;
* ``system``: host, GPU, software and git facts for the system record;
* ``builtin_model``: the synthetic model used when no ``-m`` is given, generated once into the user cache;
* ``session``: all of the above for one ``sweepbench sweep-bench`` invocation, with interruption handling;
* ``view``: the live view on stderr.
"""
