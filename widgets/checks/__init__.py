"""check_... functions for each lesson's exercises; each returns a widgets.feedback.Feedback."""

from __future__ import annotations

import functools


@functools.cache
def _shipped_pair():
    from course_lib.pretrained import load_pretrained

    return load_pretrained()


def shipped(model=None, tokenizer=None):
    """(model, tokenizer): the ones given, or else the shipped pair, loaded once for every check."""
    if model is None or tokenizer is None:
        return _shipped_pair()
    return model, tokenizer
