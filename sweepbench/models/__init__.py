"""One module per architecture; ``tensors`` lists what each needs."""
