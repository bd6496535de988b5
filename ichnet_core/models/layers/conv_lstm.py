"""Convolutional LSTM over the slice axis: ICHNet's inter-slice context.

ICHNet reads a CT series as a sequence of slices. Its bottleneck features go through a
bidirectional, multi-layer ConvLSTM (Shi et al. 2015, "Convolutional LSTM Network") so that every
slice sees its neighbours above and below before it is decoded and classified.

The layer is written for a staged ONNX/TensorRT export:

* the input-to-state convolution has no recurrence, so it runs once for *all* slices as one
  batched convolution (:meth:`ConvLSTMCell.project_inputs`);
* the recurrence is a pure step function ``step(carry, x_t) -> (carry, h_t)``
  (:meth:`ConvLSTMCell.step`) driven by :func:`scan_sequence`, whose contract is exactly that of
  ``torch._higher_order_ops.scan.scan(combine_fn, init, xs, dim=0, reverse=...)``; an exporter
  swaps the Python loop for that operator without touching the cell.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, cast

import torch
from torch import Tensor, nn

#: An LSTM has four gates (input, forget, cell candidate, output), stacked along channels.
NUM_GATES: Final[int] = 4

#: Added to the forget-gate pre-activation at initialisation so an untrained cell keeps its memory
#: (Jozefowicz et al. 2015); it lets gradients reach early slices from the first training steps.
FORGET_GATE_BIAS: Final[float] = 1.0

#: The recurrent state of one cell: (hidden state h, cell state c), each ``[B, hidden, h, w]``.
Carry = tuple[Tensor, Tensor]
StepFn = Callable[[Carry, Tensor], tuple[Carry, Tensor]]


def scan_sequence(step: StepFn, init: Carry, xs: Tensor, *, reverse: bool = False) -> Tensor:
    """Run ``step`` along dim 0 of ``xs`` and stack the per-step outputs.

    Same contract as ``torch._higher_order_ops.scan.scan(step, init, xs, dim=0, reverse=reverse)``
    (outputs stay aligned with the input positions when ``reverse`` is true), written as a plain
    loop because eager mode and autograd handle it everywhere; the export stage replaces it.

    Parameters
    ----------
    step:
        Pure function ``(carry, x_t) -> (next_carry, y_t)``.
    init:
        Initial carry.
    xs:
        ``[S, ...]`` time-major inputs, ``S >= 1``.
    reverse:
        Walk from the last element to the first.

    Returns
    -------
    Tensor
        ``[S, ...]`` stacked ``y_t``, ``ys[t]`` produced from ``xs[t]``.
    """
    length = xs.shape[0]
    order = range(length - 1, -1, -1) if reverse else range(length)
    carry = init
    ys: list[Tensor] = []
    for t in order:
        carry, y_t = step(carry, xs[t])
        ys.append(y_t)
    if reverse:
        ys.reverse()
    return torch.stack(ys, dim=0)


class ConvLSTMCell(nn.Module):
    """One ConvLSTM cell, split into a batched input projection and a hidden-state step.

    Parameters
    ----------
    in_channels:
        Channels of the input feature maps.
    hidden_channels:
        Channels of the hidden and cell states.
    kernel_size:
        Odd size of both convolutions ("same" padding keeps the spatial size).
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep the spatial size, got {kernel_size}")
        self.hidden_channels = hidden_channels
        padding = kernel_size // 2
        gate_channels = NUM_GATES * hidden_channels
        self.input_conv = nn.Conv2d(in_channels, gate_channels, kernel_size, padding=padding)
        # One bias per gate is enough: the input projection carries it.
        self.hidden_conv = nn.Conv2d(
            hidden_channels, gate_channels, kernel_size, padding=padding, bias=False
        )
        with torch.no_grad():
            bias = cast(Tensor, self.input_conv.bias)  # a Conv2d made with bias=True
            bias[hidden_channels : 2 * hidden_channels].fill_(FORGET_GATE_BIAS)

    def project_inputs(self, x: Tensor) -> Tensor:
        """Input-to-state convolution for every slice at once: ``[N, C, h, w] -> [N, 4*hid, h, w]``."""
        return self.input_conv(x)

    def initial_carry(self, projected_t: Tensor) -> Carry:
        """Zero hidden and cell states shaped like one time step of the projected inputs."""
        batch, _, height, width = projected_t.shape
        shape = (batch, self.hidden_channels, height, width)
        # Two tensors, not one twice: scan operators reject aliased carries.
        return projected_t.new_zeros(shape), projected_t.new_zeros(shape)

    def step(self, carry: Carry, projected_t: Tensor) -> tuple[Carry, Tensor]:
        """One recurrence step; pure, so it can serve as a scan ``combine_fn``.

        Parameters
        ----------
        carry:
            ``(h, c)`` of the previous step.
        projected_t:
            ``[B, 4*hidden, h, w]`` input projection of this step.

        Returns
        -------
        tuple
            ``((h_t, c_t), h_t)``.
        """
        hidden, cell = carry
        gates = projected_t + self.hidden_conv(hidden)
        i, f, g, o = torch.chunk(gates, NUM_GATES, dim=1)
        cell_t = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        hidden_t = torch.sigmoid(o) * torch.tanh(cell_t)
        # The output is a copy: scan operators reject an output that aliases the carry.
        return (hidden_t, cell_t), hidden_t.clone()

    def run(self, x: Tensor, *, reverse: bool = False) -> Tensor:
        """Run the cell over a sequence ``[B, S, C, h, w] -> [B, S, hidden, h, w]``."""
        batch, length = x.shape[:2]
        projected = self.project_inputs(x.flatten(0, 1))
        projected = projected.unflatten(0, (batch, length)).transpose(0, 1)  # time-major
        outputs = scan_sequence(
            self.step, self.initial_carry(projected[0]), projected, reverse=reverse
        )
        return outputs.transpose(0, 1)


class ConvLSTM(nn.Module):
    """Multi-layer, optionally bidirectional ConvLSTM over ``[B, S, C, h, w]`` sequences.

    Each layer runs a forward and (when bidirectional) a reversed pass over the slices and
    concatenates their hidden states along channels; the next layer reads that concatenation.

    Parameters
    ----------
    in_channels:
        Channels of the input sequence.
    hidden_channels:
        Hidden channels of each direction.
    num_layers:
        Stacked layers (the paper uses two).
    kernel_size:
        Odd convolution size of every cell.
    bidirectional:
        Add the reversed pass, so slice 0 also sees the last slice.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        num_layers: int = 2,
        kernel_size: int = 3,
        *,
        bidirectional: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        directions = 2 if bidirectional else 1
        self.out_channels = directions * hidden_channels
        self.forward_cells = nn.ModuleList()
        self.backward_cells = nn.ModuleList()
        layer_in = in_channels
        for _ in range(num_layers):
            self.forward_cells.append(ConvLSTMCell(layer_in, hidden_channels, kernel_size))
            if bidirectional:
                self.backward_cells.append(ConvLSTMCell(layer_in, hidden_channels, kernel_size))
            layer_in = self.out_channels

    def layers(self) -> list[tuple[ConvLSTMCell, ConvLSTMCell | None]]:
        """Each layer's forward cell and its backward cell (``None`` when unidirectional).

        The cells live in ``nn.ModuleList``s (so their parameters are registered), which hand
        out plain ``nn.Module``s; this is the one place that says what they hold.
        """
        forward = [cast(ConvLSTMCell, cell) for cell in self.forward_cells]
        backward = [cast(ConvLSTMCell, cell) for cell in self.backward_cells]
        return [(cell, backward[layer] if backward else None) for layer, cell in enumerate(forward)]

    def forward(self, x: Tensor) -> Tensor:
        """``[B, S, C, h, w] -> [B, S, out_channels, h, w]`` for any ``S >= 1``."""
        if x.dim() != 5 or x.shape[1] < 1:
            raise ValueError(f"ConvLSTM expects [B, S>=1, C, h, w], got shape {tuple(x.shape)}")
        out = x
        for forward_cell, backward_cell in self.layers():
            passes = [forward_cell.run(out)]
            if backward_cell is not None:
                passes.append(backward_cell.run(out, reverse=True))
            out = torch.cat(passes, dim=2)
        return out
