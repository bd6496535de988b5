"""ConvLSTM: shapes, bidirectionality, the scan contract, and the batched input projection."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from ichnet_core.models.layers.conv_lstm import (
    FORGET_GATE_BIAS,
    ConvLSTM,
    ConvLSTMCell,
    scan_sequence,
)


@pytest.mark.parametrize("slices", [1, 7])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_output_shape(slices: int, bidirectional: bool) -> None:
    lstm = ConvLSTM(3, 4, num_layers=2, bidirectional=bidirectional)
    out = lstm(torch.randn(2, slices, 3, 5, 6))
    assert out.shape == (2, slices, 8 if bidirectional else 4, 5, 6)
    assert lstm.out_channels == out.shape[2]


def test_second_layer_reads_concatenated_first_layer() -> None:
    lstm = ConvLSTM(3, 4, num_layers=2)
    assert lstm.forward_cells[0].input_conv.in_channels == 3
    assert lstm.forward_cells[1].input_conv.in_channels == 8
    assert lstm.backward_cells[1].input_conv.in_channels == 8


def _first_slice_after_changing_last(lstm: ConvLSTM) -> Tensor:
    x = torch.randn(1, 6, 3, 4, 4)
    with torch.no_grad():
        before = lstm(x)[:, 0]
        x[:, -1] += 1.0
        after = lstm(x)[:, 0]
    return (after - before).abs().max()


def test_bidirectional_first_slice_depends_on_last() -> None:
    assert _first_slice_after_changing_last(ConvLSTM(3, 4, bidirectional=True)) > 1e-4


def test_forward_only_first_slice_ignores_last() -> None:
    assert _first_slice_after_changing_last(ConvLSTM(3, 4, bidirectional=False)) == 0


def _running_sum(carry: Tensor, x_t: Tensor) -> tuple[Tensor, Tensor]:
    total = carry + x_t
    return total, total


def test_scan_sequence_follows_the_scan_contract() -> None:
    xs = torch.arange(1.0, 5.0)
    forward = scan_sequence(_running_sum, torch.tensor(0.0), xs)
    backward = scan_sequence(_running_sum, torch.tensor(0.0), xs, reverse=True)
    assert forward.tolist() == [1.0, 3.0, 6.0, 10.0]
    # Reversed: outputs stay at the position of the input that produced them.
    assert backward.tolist() == [10.0, 9.0, 7.0, 4.0]


def test_step_is_pure() -> None:
    cell = ConvLSTMCell(3, 4)
    projected = cell.project_inputs(torch.randn(2, 3, 5, 5))
    carry = (torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5))
    saved = tuple(t.clone() for t in carry)
    with torch.no_grad():
        (h1, c1), y1 = cell.step(carry, projected)
        (h2, c2), y2 = cell.step(carry, projected)
    assert (
        torch.equal(h1, h2) and torch.equal(c1, c2) and torch.equal(y1, h1) and torch.equal(y2, h2)
    )
    assert all(torch.equal(a, b) for a, b in zip(carry, saved, strict=True))


def test_input_projection_runs_once_for_all_slices() -> None:
    cell = ConvLSTMCell(3, 4)
    calls = {"input": 0, "hidden": 0}
    cell.input_conv.register_forward_hook(lambda *_: calls.__setitem__("input", calls["input"] + 1))
    cell.hidden_conv.register_forward_hook(
        lambda *_: calls.__setitem__("hidden", calls["hidden"] + 1)
    )
    out = cell.run(torch.randn(2, 9, 3, 4, 4))
    assert out.shape == (2, 9, 4, 4, 4)
    assert calls == {"input": 1, "hidden": 9}


def test_run_equals_explicit_recurrence() -> None:
    cell = ConvLSTMCell(3, 4)
    x = torch.randn(1, 5, 3, 4, 4)
    h = c = torch.zeros(1, 4, 4, 4)
    expected = []
    with torch.no_grad():
        for t in range(5):
            i, f, g, o = torch.chunk(cell.input_conv(x[:, t]) + cell.hidden_conv(h), 4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            expected.append(h)
        out = cell.run(x)
    torch.testing.assert_close(out, torch.stack(expected, dim=1))


def test_forget_gate_bias_initialised() -> None:
    cell = ConvLSTMCell(3, 4)
    assert torch.all(cell.input_conv.bias[4:8] == FORGET_GATE_BIAS)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="odd"):
        ConvLSTMCell(3, 4, kernel_size=2)
    with pytest.raises(ValueError, match="num_layers"):
        ConvLSTM(3, 4, num_layers=0)
    with pytest.raises(ValueError, match=r"\[B, S>=1, C, h, w\]"):
        ConvLSTM(3, 4)(torch.randn(2, 3, 4, 4))


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_step_runs_under_torch_scan_operator_with_dynamic_length() -> None:
    # The export stage swaps scan_sequence for torch's scan operator; the step must satisfy it.
    scan_module = pytest.importorskip(
        "torch._higher_order_ops.scan", reason="this torch has no scan operator"
    )
    cell = ConvLSTMCell(3, 4).eval()

    class ReverseScan(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = cell

        def forward(self, projected: Tensor) -> Tensor:
            init = self.cell.initial_carry(projected[0])
            return scan_module.scan(self.cell.step, init, projected, reverse=True)[1]

    def projected(length: int) -> Tensor:
        return cell.project_inputs(torch.randn(length, 3, 4, 4)).unsqueeze(1)  # [S, 1, 16, 4, 4]

    slices = torch.export.Dim("slices", min=1, max=512)
    exported = torch.export.export(
        ReverseScan(), (projected(5),), dynamic_shapes={"projected": {0: slices}}
    ).module()
    for length in (1, 9):
        xs = projected(length)
        with torch.no_grad():
            expected = scan_sequence(cell.step, cell.initial_carry(xs[0]), xs, reverse=True)
            torch.testing.assert_close(exported(xs), expected)
