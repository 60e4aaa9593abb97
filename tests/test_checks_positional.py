import math

import torch

from course_lib.positional import apply_rope, sinusoidal
from widgets.checks.positional import (
    D_MODEL,
    DIM,
    POS,
    QUERY_KEY,
    ROPE_CANDIDATES,
    check_rope_same_score,
    check_sinusoid_value,
    check_unchanged_rows,
)


def test_check_sinusoid_value():
    answer = sinusoidal(POS + 1, D_MODEL)[POS, DIM].item()
    assert check_sinusoid_value(answer)
    assert check_sinusoid_value(torch.tensor(answer))
    assert not check_sinusoid_value(None)
    assert "None" in check_sinusoid_value(None).message
    assert "sin" in check_sinusoid_value(math.sin(1.0)).message
    assert "exponent" in check_sinusoid_value(math.cos(POS / 10000 ** (DIM / D_MODEL))).message
    assert "radians" in check_sinusoid_value(math.cos(math.radians(1.0))).message
    assert not check_sinusoid_value(0.3)
    assert not check_sinusoid_value("0.54x")


def test_check_rope_same_score_agrees_with_apply_rope():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 32), torch.randn(1, 1, 32)

    def score(m: int, n: int) -> float:
        return (apply_rope(q, offset=m)[0, 0] @ apply_rope(k, offset=n)[0, 0]).item()

    target = score(*QUERY_KEY)
    same = [p for p in ROPE_CANDIDATES if abs(score(*p) - target) < 1e-4]
    assert check_rope_same_score(same)
    assert check_rope_same_score(tuple(reversed(same)))
    assert not check_rope_same_score(None)
    assert "sign" in check_rope_same_score(same + [(4, 9)]).message
    assert "missed" in check_rope_same_score(same[:1]).message
    assert not check_rope_same_score(same + [(9, 9)])
    assert not check_rope_same_score(5)


def test_check_unchanged_rows():
    assert check_unchanged_rows([2, 3])
    assert check_unchanged_rows({3, 2})
    assert not check_unchanged_rows(None)
    assert "position 0" in check_unchanged_rows([0, 1, 2, 3]).message
    assert not check_unchanged_rows([3])
    assert not check_unchanged_rows("23x")


def test_sinusoidal_right_and_the_usual_slips():
    import torch

    from course_lib.positional import sinusoidal
    from widgets.checks.positional import check_sinusoidal

    def table(n, d):
        angle = torch.arange(n).float()[:, None] / 10000 ** (torch.arange(0, d, 2).float() / d)
        out = torch.zeros(n, d)
        out[:, 0::2], out[:, 1::2] = torch.sin(angle), torch.cos(angle)
        return out

    assert check_sinusoidal(table)
    assert check_sinusoidal(lambda n, d: sinusoidal(n, d).double().numpy())
    assert "None" in check_sinusoidal(None).message
    swapped = check_sinusoidal(lambda n, d: table(n, d).view(n, d // 2, 2).flip(-1).reshape(n, d))
    assert not swapped and "swapped" in swapped.message
    halves = check_sinusoidal(lambda n, d: torch.cat([table(n, d)[:, 0::2],
                                                      table(n, d)[:, 1::2]], -1))
    assert not halves and "interleaves" in halves.message

    def by_column(n, d):
        col = torch.arange(d).float()
        angle = torch.arange(n).float()[:, None] / 10000 ** (col / d)
        return torch.where(col % 2 == 0, torch.sin(angle), torch.cos(angle))

    assert "share one frequency" in check_sinusoidal(by_column).message
    assert "shape" in check_sinusoidal(lambda n, d: table(n, d).T).message
