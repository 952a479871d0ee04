"""The run view's site adaptation: "Adapt to a site" on a finished run, and an adapted run's verdict, zero-shot against adapted."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from zoidberg.adaptation.config import ADAPT_METHOD_HELP, ADAPT_METHODS, AdaptConfig
from zoidberg.evaluation.site_figures import describe_figure, describe_harm
from zoidberg.runs.store import Run
from zoidberg.ui import state
from zoidberg.ui.widgets import show_error

FIGURE_NAMES = {"roc_auc": "AUC", "accuracy": "accuracy", "sensitivity": "sensitivity", "specificity": "specificity"}
# A share of healthy children called pneumonia above this reads as a warning, above the second as an error.
FALSE_ALARM_WARNING, FALSE_ALARM_ERROR = 0.10, 0.25


def can_adapt(run: Run, summary: dict | None) -> bool:
    """Whether the run view offers "Adapt to a site": a completed binary cv or ensemble run."""
    return run.kind in ("cv", "ensemble") and bool(summary) and len(summary.get("class_names") or ()) == 2


def adapt_to_site_ui(run: Run) -> None:
    """Draws "Adapt to a site": the site's labeled folder, the method and the parts; starts the adapt run."""
    with st.expander("🏥 Adapt to a site: learn from a few hundred of the site's own labeled films"):
        st.caption(
            "Fits site heads on this run's outputs (and its frozen features) from the site's labeled films, and measures "
            "them honestly: the site's films are split by patient into parts, and each part is scored and decided by "
            "heads fitted without it. The result is a new run; this one stays as it is."
        )
        left, middle, right = st.columns([4, 2, 1], vertical_alignment="bottom")
        folder = left.text_input("The site's labeled folder (NORMAL/ and PNEUMONIA/)", key=f"adapt_folder_{run.id}",
                                 placeholder="/data/clinic-sample")
        method = middle.selectbox("What it learns", ADAPT_METHODS, key=f"adapt_method_{run.id}",
                                  help="; ".join(f"{name}: {text}" for name, text in ADAPT_METHOD_HELP.items()))
        parts = right.number_input("Parts", 2, 10, 5, key=f"adapt_parts_{run.id}", help="k of the patient-grouped cross-fit.")
        if st.button("🏥 Adapt", key=f"adapt_start_{run.id}", disabled=not folder.strip(), type="primary"):
            try:
                config = AdaptConfig(parent=run.id, site_dir=folder.strip(), method=method, n_parts=int(parts),
                                     run_name=f"{run.name or run.id} adapted to {folder.strip().rstrip('/').split('/')[-1]}"[:80])
                run_id, attached = state.start_or_attach("adapt", config)
            except (ValueError, OSError) as error:
                show_error(error, "Not adapted.")
                return
            state.select_run(run_id)
            st.success(f"Adapted run `{run_id}` {'is already running' if attached else 'started'}: it takes about a minute. "
                       "It is listed on Train, Predict and Compare.", icon="🏥")
            st.rerun()


def figures_frame(adaptation: dict) -> pd.DataFrame:
    """Zero-shot and adapted figures with their intervals, one row each."""
    rows = []
    for label, block in (("parent, zero-shot", adaptation["zero_shot"]), ("adapted, cross-fitted", adaptation["adapted"])):
        rows.append({"": label, **{title: describe_figure(block.get(name)) for name, title in FIGURE_NAMES.items()},
                     "healthy called pneumonia": f"{block['normal_called_pneumonia']} of {block['n_normal']}",
                     "pneumonia missed": f"{block['pneumonia_missed']} of {block['n_pneumonia']}"})
    return pd.DataFrame(rows)


def shift_ui(shift: dict) -> None:
    """The shift check's sentence, as strong as its level."""
    box = {"strong": st.warning, "some": st.info, "none": st.success}.get(shift.get("level"), st.info)
    box(f"**Shift check.** {shift['sentence']}", icon="🧭")


def _harm_box(text: str, block: dict) -> None:
    """A sentence coloured by how many healthy children it calls pneumonia (harm), not by the sign of a change."""
    share = block["normal_called_pneumonia"] / max(block["n_normal"], 1)
    box = st.error if share > FALSE_ALARM_ERROR else st.warning if share > FALSE_ALARM_WARNING else st.success
    box(text)


def adaptation_result_ui(run: Run, summary: dict) -> None:
    """Leads an adapted run's view with its verdict: what the site's films say, before and after adapting."""
    adaptation = summary.get("adaptation")
    if not adaptation:
        return
    parent = adaptation["parent"]
    st.markdown(f"##### At the site: `{adaptation['site_dir'].replace('`', '')}`")
    _harm_box(f"Adapted ({adaptation['method']}), cross-fitted: {describe_harm(adaptation['adapted'])}.", adaptation["adapted"])
    _harm_box(f"Run {parent} as it was (zero-shot, at its own threshold {adaptation['zero_shot']['threshold']:.3f}): "
              f"{describe_harm(adaptation['zero_shot'])}.", adaptation["zero_shot"])
    st.dataframe(figures_frame(adaptation), hide_index=True, width="stretch")
    if adaptation.get("shift"):
        shift_ui(adaptation["shift"])
    st.caption(
        f"Patient-bootstrap 95 % intervals over {adaptation['adapted']['n_patients']} patients. Cross-fitted: the site's films "
        f"were split by patient into {adaptation['n_parts']} parts; each part was scored, and its threshold chosen, by heads "
        "fitted on the other parts only, so no film is judged by a head that learned from it. New films of this site get "
        f"the mean of those heads at threshold {summary['threshold']:.3f}. Evaluating this run on the site's own films is "
        f"refused (leakage); adaptation took {adaptation['seconds']:.0f} s."
    )
