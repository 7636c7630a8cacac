"""Route explorer: one image (from the records' data set, or uploaded), its prediction and the
route it took through the routing space, with its real and expected cost; two side by side."""

from __future__ import annotations

import _attribution
import _state
import streamlit as st

from dynviz.record.uploads import MAX_BYTES, MAX_PIXELS, UploadError, overlay
from dynviz.units import format_macs

ctx = _state.context()
records = _state.records_or_stop(ctx)
path, mtime = ctx.records, _state.stamp(ctx.records)
config_json = _state.config_json(records)
class_names = list(records.sidecar.class_names)

st.title("Route explorer")
st.caption(
    f"Records `{ctx.catalog.label(path)}`: {records.label}, {len(records.images)} images "
    f"of `{records.sidecar.data}` [{records.sidecar.split}]. Edges: width and "
    "opacity follow the image's alpha; dotted faint edges are closed paths."
)

model, info = _state.records_model(path, mtime)
if info.note:
    st.warning(info.note, icon=":material/info:")

c1, c2 = st.columns([1, 2])
compare = c1.toggle("Compare two images", key="explorer_compare")
opacity = c2.slider("Prediction opacity", 0.0, 1.0, 0.5, 0.05, key="explorer_opacity")


@st.fragment
def attribution(image: object, key: str) -> None:
    """The gate attribution panel of one image (:func:`_attribution.panel`), a fragment: its
    toggle, a click on its path grid and its node and path pickers rerun only the panel, not
    the page (the image, its prediction and its route stay as they are)."""
    _attribution.panel(path, mtime, image, key=key)


def show(
    view: _state.ImageView,
    *,
    key: str,
    narrow: bool = False,
    differs: tuple[tuple[int, int, str], ...] = (),
) -> None:
    """Draw one image: picture, prediction overlay, metrics and route. ``narrow``: half the
    page (compare mode): the figures go under the pictures, in full; ``differs``: the paths
    where the other image's route differs, marked on the route."""
    if view.note:
        st.info(view.note)
    if narrow:
        picture, predicted = st.columns(2)
        numbers = st.container()
    else:
        picture, predicted, numbers = st.columns(3)
    palette = _state.records_palette(path, mtime)
    if view.image is not None:
        picture.image(
            view.image,
            caption=f"{view.image_id} ({view.image.shape[0]}x{view.image.shape[1]})",
            width="stretch",
        )
        if view.prediction is not None:
            predicted.image(
                overlay(view.image, view.prediction, opacity=opacity, palette=palette),
                caption="prediction",
                width="stretch",
            )
            predicted.markdown(
                _state.class_legend(palette, class_names, view.prediction),
                unsafe_allow_html=True,
            )
        elif view.label is not None:
            predicted.image(
                overlay(view.image, view.label, opacity=opacity, palette=palette),
                caption="ground truth",
                width="stretch",
            )
            predicted.markdown(
                _state.class_legend(palette, class_names, view.label), unsafe_allow_html=True
            )
    miou = "n/a" if view.miou is None else f"{view.miou:.3f}"
    real = format_macs(view.real_gmacs, digits=3)
    expected = format_macs(view.expected_gmacs, digits=3)
    if narrow:  # half a page: big metric values would be cut ("5.19 ..."); a line wraps
        numbers.markdown(
            f"**Real cost** {real} &nbsp;·&nbsp; **expected cost** {expected} &nbsp;·&nbsp; "
            f"**mIoU** {miou}",
            help="real: MACs executed for this image (closed paths skipped); expected: Eq. "
            "7-8 with its alphas; mIoU: n/a for an upload (it has no label)",
        )
    else:
        numbers.metric(
            "Real cost", real, help="MACs executed for this image (closed paths skipped)"
        )
        numbers.metric("Expected cost", expected, help="Eq. 7-8 with this image's alphas")
        numbers.metric("mIoU", miou, help="this image's mIoU (n/a for an upload: it has no label)")
    if view.gates.empty:
        return
    if view.image is not None:
        height, width = view.image.shape[:2]
    else:
        height, width = (int(v) for v in records.images.iloc[0][["height", "width"]])
    active = int(view.gates["active"].sum())
    fig = _state.route_figure(
        config_json,
        view.gates,
        int(height),
        int(width),
        f"{view.image_id}: {active} of {len(view.gates)} paths open",
        highlight=differs,
        narrow=narrow,
    )
    st.plotly_chart(fig, width="stretch", key=f"route_{key}")
    attribution(view.image, key)  # why this route: gate attribution, rerun on its own
    if view.stats:
        with st.expander("Object-scale statistics"):
            st.dataframe({k: [v] for k, v in view.stats.items()}, hide_index=True)


def dataset_view(slot: int, default: int) -> _state.ImageView:
    """Pick a recorded image: from a menu, or by its number when the records hold more images
    than a menu should list (100,000 ids are 1.2 MB sent on every run)."""
    count = len(records.images)
    if count <= _state.MENU_IMAGES:
        ids = records.images["image_id"].astype(str).tolist()
        image_id = st.selectbox(
            "Image", ids, index=min(default, count - 1), key=f"explorer_image_{slot}"
        )
    else:
        number = st.number_input(
            f"Image (1 to {count:,})",
            1,
            count,
            min(default, count - 1) + 1,
            key=f"explorer_number_{slot}",
            help="The image's place in the records; its id is shown with it.",
        )
        image_id = str(records.images["image_id"].iloc[int(number) - 1])
        st.caption(f"`{image_id}`")
    return _state.dataset_image(path, mtime, image_id)


def upload_view(slot: int) -> _state.ImageView | None:
    file = st.file_uploader(
        "Upload an image",
        type=["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp"],
        key=f"explorer_upload_{slot}",
        max_upload_size=-(-MAX_BYTES // 2**20),
        help=f"At most {MAX_BYTES // 2**20} MiB and {MAX_PIXELS / 1e6:.1f} megapixels; scaled "
        "down to 1024 pixels on the longer side before the model runs.",
    )
    if file is None:
        st.caption("Drop an image here to see the route the model takes for it.")
        return None
    if model is None:
        st.error("No model for these records: cannot run an uploaded image.")
        return None
    try:
        return _state.upload_image(path, mtime, file.name, file.getvalue(), 1024)
    except UploadError as err:
        st.error(str(err), icon=":material/broken_image:")
        return None


def open_paths(view: _state.ImageView) -> set[tuple[int, int, str]]:
    """``(layer, stride, direction)`` of the paths open for an image."""
    gates = view.gates[view.gates["active"]]
    return {
        (int(layer), int(scale), str(direction))
        for layer, scale, direction in zip(
            gates["layer"], gates["scale"], gates["direction"], strict=True
        )
    }


slots = [0, 1] if compare else [0]
columns = st.columns(len(slots))
views: list[_state.ImageView | None] = []
for slot, column in zip(slots, columns, strict=True):
    with column:
        pick_source, pick_image = st.columns([1, 2])
        source = pick_source.radio(
            "Image from",
            ["Data set", "Upload"],
            key=f"explorer_source_{slot}",
            help="An image of the records, or your own image run through the model",
        )
        with pick_image:
            views.append(
                dataset_view(slot, default=slot) if source == "Data set" else upload_view(slot)
            )
differs: tuple[tuple[int, int, str], ...] = ()
if compare and all(v is not None and not v.gates.empty for v in views):
    first, second = (open_paths(v) for v in views)
    differs = tuple(sorted(first ^ second))
    only = [sorted(first - second), sorted(second - first)]
    names = [v.image_id for v in views]

    def listed(paths: list[tuple[int, int, str]]) -> str:
        return ", ".join(f"layer {layer} 1/{stride} {d}" for layer, stride, d in paths) or "none"

    st.markdown(
        f"**{len(differs)} paths differ** (marked in yellow on both routes): open only for "
        f"`{names[0]}`: {listed(only[0])}; open only for `{names[1]}`: {listed(only[1])}."
    )
for slot, column, view in zip(slots, st.columns(len(slots)), views, strict=True):
    if view is not None:  # under the summary of what differs
        with column:
            show(view, key=str(slot), narrow=compare, differs=differs)
