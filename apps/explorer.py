"""dynviz route explorer: the Streamlit entrypoint.

Run it with ``dynviz app [DIR]`` or ``streamlit run apps/explorer.py``. This script is the frame of
every page: it sets up the navigation and the shared sidebar (the folder searched for training
runs and records, and the records the pages show); each page lives in ``apps/views/``.
"""

from __future__ import annotations

import _state
import streamlit as st

from dynviz.inference.allocator import tune_malloc

tune_malloc()  # keep freed memory for reuse, as the CLI commands do: large records load faster

st.set_page_config(page_title="dynviz route explorer", page_icon=":material/route:", layout="wide")

PAGES = [
    st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("views/route_explorer.py", title="Route explorer", icon=":material/route:"),
    st.Page("views/distributions.py", title="Distributions", icon=":material/bar_chart:"),
    st.Page("views/common_networks.py", title="Common networks", icon=":material/hub:"),
    st.Page("views/special_cases.py", title="Special cases", icon=":material/grid_view:"),
    st.Page("views/routing_vs_scale.py", title="Routing vs scale", icon=":material/scatter_plot:"),
    st.Page("views/latency.py", title="Latency", icon=":material/timer:"),
]

navigation = st.navigation(PAGES)
_state.sidebar()
navigation.run()
