"""The recognition engine: plain PyTorch, no Django. Commands, tasks and views build on it."""
