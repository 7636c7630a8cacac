"""The skipping engine: the network's forward that computes only what is open (inference).

:func:`forward_skip` computes the same function as the reference forward
(``RoutingNetwork._forward_soft``, Eqs. 1-6) but a path with alpha 0 is not computed and a cell
whose paths are all closed is not computed (X passes through its keep output). Each node runs only
on the samples that need it: its input is gathered for them, computed, and its outputs are
scattered to the nodes they feed. At batch 1 this is plain skipping.

Official semantics (``dynviz.model.config.Semantics``): a cell that runs feeds every path it owns;
a closed path (alpha 0) delivers a zero input, so the node it feeds still runs its gate and cell
on zeros. Those zeros are recorded without computing the transform (:meth:`_Accumulator.add_zeros`).
Forced routes describe static networks: their closed paths deliver nothing (:func:`feeds_zeros`).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import torch

from dynviz.model.config import Direction, PathKey, RoutingSpaceConfig
from dynviz.model.route import RouteError
from dynviz.model.topology import cell_edges

if TYPE_CHECKING:
    from dynviz.model.network import RoutingNetwork

__all__ = ["feeds_zeros", "forward_route", "forward_skip"]

Features = tuple[list[torch.Tensor | None], list[torch.Tensor], torch.Tensor, torch.Tensor]


def forward_skip(
    network: RoutingNetwork, stem: torch.Tensor, forced: torch.Tensor | None
) -> Features:
    """Run the routing layers of ``network`` on the stem output, skipping what is closed.

    Args:
        network: the network whose cells, gates and config are used.
        stem: ``(B, C, H/4, W/4)`` stem output.
        forced: ``(B, L + 1, S, 3)`` alphas replacing the gates, or None.

    Returns:
        ``(features, present, gates, own)``: the last layer's output per scale (None where no
        sample has one), ``(B,)`` bool per scale for the samples that have it, ``(B, L + 1, S,
        3)`` alphas (0 where closed, absent, dropped or never fed) and the gates' own alphas
        before the closing rule (0 where never fed).
    """
    config = network.config
    zeros_feed = feeds_zeros(config, forced)
    b = stem.shape[0]
    device = stem.device
    inplace = not torch.is_grad_enabled()  # no autograd graph: buffers may be reused
    gates = stem.new_zeros(b, config.num_layers + 1, config.num_scales, len(Direction))
    own = torch.zeros_like(gates)
    nodes = _Accumulator(b, inplace=inplace)
    nodes.add((0, 0), stem, None)
    decoder = _Accumulator(b, inplace=inplace)
    for layer, scale in config.cells:
        source = (layer, scale)
        x, index = nodes.pop(source)  # (b, C, h, w) for the samples with input
        cell = network.cell(layer, scale)
        if cell is None or x is None:
            continue  # no input arrived: the cell is not computed
        raw = network.gate_alpha(cell, layer, scale, x, forced, index)
        alpha = network.close(raw)
        dirs = [int(d) for d in cell.directions]
        if index is None:
            gates[:, layer, scale, dirs] = alpha
            own[:, layer, scale, dirs] = raw.detach()
        else:
            where = (index.unsqueeze(1), layer, scale, torch.tensor(dirs, device=device))
            gates[where] = alpha
            own[where] = raw.detach()
        active = alpha > 0
        on = active.any(1)
        if not bool(on.all()):  # Eq. 5-6: X passes through the keep output
            if Direction.KEEP not in cell.directions:
                raise RouteError(
                    f"cell (layer {layer}, 1/{config.stride(scale)}) has no keep "
                    "output to pass its input through"
                )
            p_local, p_index = _subset(~on, index)
            _emit(config, nodes, decoder, source, Direction.KEEP, _take(x, p_local), p_index)
        if not bool(on.any()):
            continue
        o_local, o_index = _subset(on, index)
        alpha_on, active_on = _take(alpha, o_local), _take(active, o_local)
        # ReLU(H), only for samples with an open path
        r = cell.hidden(_take(x, o_local), inplace=inplace)
        del x
        for j, d in enumerate(cell.directions):
            if zeros_feed and not bool(active_on[:, j].all()):
                z_local, z_index = _subset(~active_on[:, j], o_index)
                _emit(config, nodes, decoder, source, d, None, z_index, like=r)
            if not bool(active_on[:, j].any()):
                continue  # closed for every sample: never computed
            d_local, d_index = _subset(active_on[:, j], o_index)
            y = cell.transform(d, _take(r, d_local))
            a = _take(alpha_on[:, j], d_local)
            if forced is None or not bool((a == 1).all()):  # forced routes: alpha is 1
                y = y * a.view(-1, 1, 1, 1)
            _emit(config, nodes, decoder, source, d, y, d_index)
    features, present = _decoder_inputs(decoder, config.num_scales, b, device)
    return features, present, gates, own


Step = tuple[str, tuple[int, int], tuple[tuple[Direction, tuple[int, int] | None], ...]]
"""One cell of a route's plan: its module key, its node, and its open outputs (direction,
target node; None feeds the decoder), in forward order."""


@cache
def route_plan(config: RoutingSpaceConfig, paths: frozenset[PathKey]) -> tuple[Step, ...]:
    """The cells a route runs, in forward order, with their open outputs: the route's part of
    the space's graph (:func:`dynviz.model.topology.cell_edges`)."""
    plan = []
    for (layer, scale), out in cell_edges(config):
        open_out = tuple((e.direction, e.target) for e in out if e.key in paths)
        if open_out:
            plan.append((f"{layer}_{scale}", (layer, scale), open_out))
    return tuple(plan)


def forward_route(network: RoutingNetwork, stem: torch.Tensor, forced: torch.Tensor) -> Features:
    """:func:`forward_skip` for one route forced on every sample, as a straight line.

    Every sample takes the same paths, so no node needs gathering, scattering or masks: the
    route's cells run in forward order on the whole batch (:func:`route_plan`), as the static
    network of the route does (:class:`dynviz.inference.static.StaticNetwork` runs the same
    plan). The function is that of :func:`forward_skip` with the route forced.

    Args:
        network: the network whose cells are used.
        stem: ``(B, C, H/4, W/4)`` stem output.
        forced: ``(L + 1, S, 3)`` or ``(B, L + 1, S, 3)`` alphas of one valid route, 1 where
            open (the same for every sample).
    """
    config = network.config
    b = stem.shape[0]
    route = forced[0] if forced.dim() == 4 else forced
    paths = frozenset((layer, scale, Direction(d)) for layer, scale, d in route.nonzero().tolist())
    inplace = not torch.is_grad_enabled()
    _, features = run_plan(network, route_plan(config, paths), stem, inplace=inplace)
    present = [
        (torch.ones if f is not None else torch.zeros)(b, dtype=torch.bool, device=stem.device)
        for f in features
    ]
    gates = route.to(stem.dtype).expand(b, *route.shape).contiguous()
    return features, present, gates, gates.clone()


def run_plan(
    network: torch.nn.Module, plan: tuple[Step, ...], stem: torch.Tensor, *, inplace: bool
) -> tuple[dict[tuple[int, int], torch.Tensor], list[torch.Tensor | None]]:
    """Run the cells of ``plan`` on the whole batch: ``(leftover nodes, the last layer's output
    per scale)`` (None where the route does not reach the decoder). ``inplace`` (no autograd,
    no tracing) sums node inputs into the first one's buffer."""
    nodes: dict[tuple[int, int], torch.Tensor] = {(0, 0): stem}
    features: list[torch.Tensor | None] = [None] * network.config.num_scales
    for key, node, outputs in plan:
        cell = network.cells[key]
        r = cell.hidden(nodes.pop(node), inplace=inplace)  # ReLU(H), H = O(X) + X (Eq. 4)
        for d, target in outputs:
            y = cell.transform(d, r)
            if target is None:
                features[node[1]] = y
            elif target in nodes:
                nodes[target] = nodes[target].add_(y) if inplace else nodes[target] + y
            else:
                nodes[target] = y  # r itself for keep: read-only until this cell is done
    return nodes, features


def _emit(
    config: RoutingSpaceConfig,
    nodes: _Accumulator,
    decoder: _Accumulator,
    source: tuple[int, int],
    d: Direction,
    y: torch.Tensor | None,
    where: torch.Tensor | None,
    like: torch.Tensor | None = None,
) -> None:
    """Route the output ``y`` of path ``d`` of cell ``source`` (computed for the samples
    ``where``) to the node it feeds, or to the decoder from the last layer; ``y`` None routes
    zeros shaped as ``d`` applied to ``like`` (official semantics: a closed path)."""
    target = config.target(*source, d)
    queue, key = (decoder, source[1]) if target is None else (nodes, target)
    if y is None:  # official: a closed path delivers zeros
        assert like is not None
        queue.add_zeros(key, where, like, _output_shape(d, like))
    else:
        queue.add(key, y, where)


def _decoder_inputs(
    decoder: _Accumulator, num_scales: int, batch: int, device: torch.device
) -> tuple[list[torch.Tensor | None], list[torch.Tensor]]:
    """The last layer's output per scale as full-batch tensors (None where no sample has one)
    and ``(B,)`` bool per scale for the samples that have it."""
    features: list[torch.Tensor | None] = []
    present = []
    for scale in range(num_scales):
        f, index = decoder.pop(scale)
        features.append(None if f is None else _scatter(f, index, batch))
        present.append(
            _present(index, batch, device)
            if f is not None
            else torch.zeros(batch, dtype=torch.bool, device=device)
        )
    return features, present


def feeds_zeros(config: RoutingSpaceConfig, forced: torch.Tensor | None) -> bool:
    """Whether a closed path of a running cell delivers zeros that feed its node: official
    semantics under the gates. A forced route describes a static network, so its closed paths
    deliver nothing in both semantics (the static network of a route equals the dynamic
    network forced to it)."""
    return config.official and forced is None


def _output_shape(d: Direction, r: torch.Tensor) -> tuple[int, int, int]:
    """``(C, h, w)`` of transform ``d`` applied to ``r`` ``(n, C, h, w)``."""
    c, h, w = r.shape[1], r.shape[2], r.shape[3]
    if d is Direction.KEEP:
        return c, h, w
    if d is Direction.UP:
        return c // 2, 2 * h, 2 * w
    return 2 * c, (h + 1) // 2, (w + 1) // 2  # 1x1 conv, stride 2, no padding


class _Accumulator:
    """Routed outputs waiting for their receiving node, summed when the node runs.

    Each part is ``(y, index)``: ``y`` was computed for the samples ``index`` (absolute sample
    ids, sorted; None = the whole batch). A node's input is kept compact: it covers only the
    samples that received something, so no full-batch buffer is built between cells (the next
    cell would have to gather its samples back out of it).
    """

    def __init__(self, batch: int, *, inplace: bool) -> None:
        self.batch = batch
        self.inplace = inplace  # no autograd: the first part may be summed into
        self.parts: dict[object, list[tuple[torch.Tensor | None, torch.Tensor | None]]] = {}
        self.zeros: dict[object, tuple[torch.Tensor, tuple[int, ...]]] = {}

    def add(self, key: object, y: torch.Tensor, index: torch.Tensor | None) -> None:
        """Route ``y`` (computed for the samples ``index``, None = all) into node ``key``."""
        self.parts.setdefault(key, []).append((y, index))

    def add_zeros(
        self, key: object, index: torch.Tensor | None, like: torch.Tensor, shape: tuple[int, ...]
    ) -> None:
        """Route zeros of ``(C, h, w) = shape`` (dtype and layout of ``like``) for the samples
        ``index`` into node ``key``: the node receives an input for them (official semantics)."""
        self.parts.setdefault(key, []).append((None, index))
        self.zeros.setdefault(key, (like, shape))

    def pop(self, key: object) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The summed input of node ``key`` and the samples it covers.

        Returns:
            ``(x, index)``: ``x`` is ``(n, C, h, w)`` for the sorted sample ids ``index`` (None =
            the whole batch, ``n = B``); ``(None, None)`` when nothing arrived.
        """
        parts = self.parts.pop(key, None)
        if not parts:
            return None, None
        union = _union([index for _, index in parts], self.batch)
        zeros = self.zeros.pop(key, None)
        tensors = [(y, index) for y, index in parts if y is not None]
        if not tensors:  # only zeros arrived
            assert zeros is not None
            n = self.batch if union is None else int(union.numel())
            return _zeros(zeros[0], n, zeros[1]), union
        x: torch.Tensor | None = None
        owned = False
        for y, index in tensors:
            if _same(index, union):
                if x is None:
                    x, owned = y, self.inplace
                elif owned:
                    x.add_(y)
                else:
                    x, owned = x + y, True
                continue
            if x is None:
                n = self.batch if union is None else int(union.numel())
                x, owned = _zeros(y, n), True
            elif not owned:
                x, owned = x.clone(memory_format=torch.preserve_format), True
            where = index if union is None else torch.searchsorted(union, index)
            x.index_add_(0, where, y)
        return x, union


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a is b or (a.numel() == b.numel() and bool(torch.equal(a, b)))


def _union(indices: list[torch.Tensor | None], batch: int) -> torch.Tensor | None:
    """Sorted union of sample ids (None = all samples)."""
    if any(index is None for index in indices):
        return None
    first = indices[0]
    assert first is not None
    if all(_same(first, index) for index in indices[1:]):
        return first
    union = torch.unique(torch.cat(indices))  # type: ignore[arg-type]  # sorted
    return None if union.numel() == batch else union


def _zeros(like: torch.Tensor, n: int, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Zeros ``(n, *shape)`` (default ``like.shape[1:]``) in the memory format of ``like``."""
    fmt = torch.channels_last if _is_channels_last(like) else torch.contiguous_format
    shape = tuple(like.shape[1:]) if shape is None else shape
    return torch.empty((n, *shape), dtype=like.dtype, device=like.device, memory_format=fmt).zero_()


def _subset(
    mask: torch.Tensor, index: torch.Tensor | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Local and absolute sample indices where ``mask`` holds; (None, index) when it all does."""
    if bool(mask.all()):
        return None, index
    local = mask.nonzero().squeeze(1)
    return local, (local if index is None else index[local])


def _take(x: torch.Tensor, local: torch.Tensor | None) -> torch.Tensor:
    """The samples ``local`` of ``x`` (all when None), in the memory format of ``x``."""
    if local is None:
        return x
    if _is_channels_last(x):  # index_select would return the default layout
        return x.permute(0, 2, 3, 1).index_select(0, local).permute(0, 3, 1, 2)
    return x.index_select(0, local)


def _is_channels_last(x: torch.Tensor) -> bool:
    return (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    )


def _scatter(x: torch.Tensor, index: torch.Tensor | None, batch: int) -> torch.Tensor:
    """``x`` computed for the samples ``index`` as a full-batch tensor (zero elsewhere)."""
    if index is None:
        return x
    out = _zeros(x, batch)
    out.index_copy_(0, index, x)
    return out


def _present(index: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
    if index is None:
        return torch.ones(batch, dtype=torch.bool, device=device)
    out = torch.zeros(batch, dtype=torch.bool, device=device)
    out[index] = True
    return out
