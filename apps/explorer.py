"""dynviz route explorer: the Streamlit entrypoint.

Run it with ``dynviz app [DIR]`` or ``streamlit run apps/explorer.py``. This script is the frame of
every page: it sets up the navigation and the shared sidebar (the folder searched for training
runs and records, and the records the pages show); each page lives in ``apps/views/``.
``dynviz app`` imports the modules below and reads the records into the server's caches before
the server answers (``_state.preload``), so the first page finds them there; under a plain
``streamlit run`` the first visitor waits for both.
"""

from __future__ import annotations

import gc

import _gates
import _state
import streamlit as st

# Streamlit runs a full garbage collection after every script run (``runner.postScriptGC``); with
# torch, pandas and plotly imported that walks about 260,000 objects, 0.19 s of CPU holding the
# GIL, longer than most pages take. The modules live as long as the server: moved out of the
# collector's sight once, the collection after a run takes about a millisecond.
if not gc.get_freeze_count():
    gc.freeze()

# glibc's malloc thresholds stay as they are (no ``tune_malloc``, unlike the CLI commands): a
# server runs each session's script on its own thread, and with raised thresholds every thread's
# heap keeps its peak. Eight sessions on records of 100,000 images peaked at 1.5 GB with them and
# 0.8 GB without, for the same page times (docs/reliability.md, "Explorer under load").
st.set_page_config(page_title="dynviz route explorer", page_icon=":material/route:", layout="wide")

PAGES = [
    st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("views/route_explorer.py", title="Route explorer", icon=":material/route:"),
    st.Page("views/distributions.py", title="Distributions", icon=":material/bar_chart:"),
    st.Page("views/common_networks.py", title="Common networks", icon=":material/hub:"),
    st.Page("views/special_cases.py", title="Special cases", icon=":material/grid_view:"),
    st.Page("views/routing_vs_scale.py", title="Routing vs scale", icon=":material/scatter_plot:"),
    st.Page("views/latency.py", title="Latency", icon=":material/timer:"),
    # any gate graph (issue 27): gate-graph records and routing-space records alike
    st.Page("views/gate_points.py", title="Gates", icon=":material/alt_route:", url_path="gates"),
    st.Page(
        "views/gate_common.py",
        title="Common paths",
        icon=":material/filter_alt:",
        url_path="common_paths",
    ),
    st.Page(
        "views/gate_costs.py",
        title="Cost and statistics",
        icon=":material/query_stats:",
        url_path="cost_statistics",
    ),
]

navigation = st.navigation(PAGES)
ctx = _state.sidebar()

# The routing-space pages say why they do not apply to gate-graph records instead of failing.
reason = _gates.page_does_not_apply(navigation.url_path, ctx)
if reason:
    st.title(navigation.title)
    st.info(reason, icon=":material/info:")
else:
    navigation.run()
