"""Result files: the Run/Row model, readers for our JSONL and published llama-sweep-bench / llama-bench output."""
