"""The one training loop of the torch heads (emofeat.training): the same updates as a plain AdamW
loop written out here, the accumulation rule honoured, and a stop at a non-finite loss."""

import numpy as np
import pytest
import torch

from emofeat.errors import EmofeatError
from emofeat.training import inverse_frequency, train_head


def _data(n=24, d=5, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g)


def _plain_loop(model, x, y, *, epochs, lr, batch, accumulate, weight=None):
    """What train_head must do, written independently: AdamW, loss / accumulate, a step after
    every ``accumulate`` batches and after the last."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    chunks = list(zip(x.split(batch), y.split(batch)))
    for _ in range(epochs):
        opt.zero_grad()
        for i, (xb, yb) in enumerate(chunks):
            loss = torch.nn.functional.cross_entropy(model(xb), yb, weight=weight)
            (loss / accumulate).backward()
            if (i + 1) % accumulate == 0 or i == len(chunks) - 1:
                opt.step()
                opt.zero_grad()
    return model


@pytest.mark.parametrize("accumulate", [1, 3])
def test_train_head_makes_the_updates_of_a_plain_adamw_loop(accumulate):
    x, y = _data()
    weight = inverse_frequency(y.numpy(), 3)
    torch.manual_seed(0)
    ours = torch.nn.Linear(5, 3)
    theirs = torch.nn.Linear(5, 3)
    theirs.load_state_dict(ours.state_dict())
    chunks = list(zip(x.split(4), y.split(4)))
    history = train_head(
        ours,
        lambda epoch: chunks,
        epochs=4,
        lr=0.05,
        class_weight=weight,
        grad_accum=accumulate,
        steps_after=lambda b, n: (b + 1) % accumulate == 0 or b == n - 1,
    )
    _plain_loop(theirs, x, y, epochs=4, lr=0.05, batch=4, accumulate=accumulate, weight=weight)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b)
    assert [h["epoch"] for h in history] == [1.0, 2.0, 3.0, 4.0]
    assert not ours.training  # left in eval mode


def test_inverse_frequency_weights_are_n_over_count_and_zero_for_an_absent_class():
    y = np.array([0, 0, 0, 1])
    np.testing.assert_allclose(inverse_frequency(y, 3).numpy(), [4 / 3, 4.0, 0.0])


def test_a_non_finite_loss_stops_training_naming_the_head():
    x, y = _data()
    x[3, 2] = float("nan")
    model = torch.nn.Linear(5, 3)
    with pytest.raises(
        EmofeatError, match="the probe: non-finite training loss at epoch 1, step 1"
    ):
        train_head(model, lambda epoch: [(x, y)], epochs=2, lr=0.1, name="the probe")
