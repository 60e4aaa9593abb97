"""course_lib: a small, complete GPT stack in PyTorch that the course's lessons run on."""

__version__ = "0.1.0"
