"""A run's honest numbers on the Train page: CV against new data, the operating point, calibration, decision curves, evaluations."""

from __future__ import annotations


import pandas as pd
import streamlit as st

from zoidberg.config import PROBABILITY_SCALES, THRESHOLD_METHOD_LABELS, THRESHOLD_METHODS, OperatingPointChoice
from zoidberg.data.dataset import DatasetError, find_class_folders
from zoidberg.evaluation.stored import current_evaluations, evaluation_name, score_histogram
from zoidberg.evaluation.gap import CV_COLUMN, NOTABLE_CHANGE, gap_table, gap_verdict, harm_of
from zoidberg.evaluation.leakage import evaluation_notes
from zoidberg.evaluation.operating import SAME_FILMS_ASSUMPTION, rates_to_read
from zoidberg.evaluation.out_of_fold import read_out_of_fold, set_operating_point
from zoidberg.launch import jobs
from zoidberg.runs.store import CALIBRATION_FILE, OPERATING_POINT_FILE, Run
from zoidberg.ui import evaluation_figures, figures, state, widgets
from zoidberg.ui.widgets import escape_markdown, format_number, show_error

GAP_EXPLANATION = (
    "Cross-validation pools the training data, so every fold's patients come from the same hospitals, "
    "machines and class mix as the rest: it saturates near AUC 0.99 on the Kermany data while new X-rays score "
    "lower. An evaluation on a folder the run never trained on (another hospital, a patient-disjoint hold-out) "
    "is the number to trust; the change column says how far the estimate was off."
)
OPERATING_POINT_HELP = (
    "All thresholds are fitted on the out-of-fold predictions (never on test or external images). "
    "Sensitivity and specificity do not depend on the prevalence; PPV and NPV do, by Bayes' rule."
)


def _cell(entry: dict | None, *, with_std: bool = False) -> str:
    """"0.947 [0.931, 0.962] (−0.045)" for a gap-table cell."""
    if not entry or entry.get("value") is None:
        return "—"
    text = format_number(entry["value"])
    if with_std and entry.get("std") is not None:
        text += f" ± {format_number(entry['std'])}"
    if entry.get("low") is not None:
        text += f" [{format_number(entry['low'])}, {format_number(entry['high'])}]"
    if entry.get("change") is not None:
        text += f" ({entry['change']:+.3f})"
    return text


# The verdict's badge colour and word: by harm to patients.
VERDICT_BADGES = {"holds": ("green", "Holds on new films"), "worse": ("orange", "Worse on new films"), "large": ("red", "Clearly worse on new films")}
# Cell colours of the gap table, by what a change does to patients (not by its sign).
HARM_STYLES = {"worse": "background-color: rgba(214, 39, 40, 0.22)", "better": "background-color: rgba(44, 160, 44, 0.18)", "same": ""}


def gap_verdict_ui(run: Run, evaluations: list[dict]) -> bool:
    """Leads the run view with what each evaluation says against cross-validation; returns whether a gap is large."""
    large = False
    for evaluation in evaluations:
        verdict = gap_verdict(run, evaluation)
        large = large or verdict["large"]
        text = escape_markdown(verdict["headline"]) + (f" {verdict['counts']}" if verdict["counts"] else "")
        # Coloured by harm: red when new children fare clearly worse than cross-validation said.
        colour, badge = VERDICT_BADGES["holds" if verdict["level"] == "holds" else "large" if verdict["large"] else "worse"]
        with st.container(border=True):
            st.markdown(f":{colour}-background[**{badge}**] {text}")
    return large


def gap_table_ui(run: Run, evaluations: list[dict]) -> None:
    """Draws cross-validation against every evaluation, metric by metric, coloured by harm (gap_verdict_ui leads the run view)."""
    large = any(gap_verdict(run, evaluation)["large"] for evaluation in evaluations)
    rows = gap_table(run, evaluations)
    names = [evaluation["name"] for evaluation in evaluations]
    frame = pd.DataFrame(
        [
            {"metric": row["metric"], f"{CV_COLUMN} (mean ± std)": _cell(row[CV_COLUMN], with_std=True), **{name: _cell(row.get(name)) for name in names}}
            for row in rows
        ]
    )
    harms = pd.DataFrame(
        [{column: HARM_STYLES[harm_of(row["key"], (row.get(column) or {}).get("change"))] if column in names else "" for column in frame.columns}
         for row in rows],
        index=frame.index,
    )
    st.dataframe(frame.style.apply(lambda _: harms, axis=None), hide_index=True, width="stretch")
    counts = "; ".join(f"**{escape_markdown(item['name'])}**: {item['n_images']} images of {item['n_patients']} patients ({item['split']} of `{escape_markdown(item['data_dir'])}`)" for item in evaluations)
    st.caption(
        ("Each evaluation at the run's operating point; AUC with its 95 % interval from a bootstrap over patients, "
         "and the change from cross-validation in brackets. Red: worse for patients (a rate that fell, an error that "
         f"rose) by {NOTABLE_CHANGE} or more; green: better. " + counts) if evaluations else
        "No evaluation on new data yet: evaluate this run on a folder it never trained on (tab **Evaluations**)."
    )
    with st.expander("Why the two differ", expanded=large):
        st.markdown(GAP_EXPLANATION)


def operating_point_ui(run: Run) -> None:
    """Draws the run's operating point with its fold-wise spread, the usual methods, and the form to change it."""
    point = run.read_json(OPERATING_POINT_FILE)
    if point is None:
        st.info("This run has no operating point: three-class runs predict the most probable class, and runs made "
                "before operating points existed use their stored threshold.", icon="ℹ️")
        return
    choice = OperatingPointChoice.from_dict(point["choice"])
    spread = point["mean_std"]
    measured = [row for row in rates_to_read(point, current_evaluations(run)) if row["measured"]]
    if measured:
        # What the model did on new films comes first: the cross-validation rates below hold only where films look alike.
        st.markdown("**Measured on new films** — quote these")
        widgets.metrics_table(pd.DataFrame([{"rates": row["rates"], "prevalence": row["prevalence"], "sensitivity": row["sensitivity"],
                                             "specificity": row["specificity"], "PPV": row["ppv"], "NPV": row["npv"]} for row in measured]))
        st.markdown("**Cross-validation, out of fold**")
    columns = st.columns(5)
    columns[0].metric("Threshold", format_number(point["threshold"]), help=f"{choice.describe()}, on {choice.probabilities} probabilities")
    for column, name, label in zip(columns[1:], ("sensitivity", "specificity", "ppv", "npv"), ("Sensitivity", "Specificity", "PPV", "NPV")):
        column.metric(label, format_number(spread[name]["mean"]), f"± {format_number(spread[name]['std'])} over folds", delta_color="off", delta_arrow="off")
    st.caption(
        f"**{choice.describe()}** on **{choice.probabilities}** probabilities. PPV and NPV at a prevalence of "
        f"**{point['prevalence']:.1%}** ({point['prevalence_source']}). " + OPERATING_POINT_HELP
        + (f" Carried to another prevalence, these rates {SAME_FILMS_ASSUMPTION}." if measured else "")
    )
    if "table" in point:
        table = pd.DataFrame(point["table"])[["description", "threshold", "sensitivity", "sensitivity_std", "specificity", "specificity_std", "ppv", "npv"]]
        table.columns = ["method", "threshold", "sensitivity", "± sd", "specificity", "± sd ", "PPV", "NPV"]
        widgets.metrics_table(table)
        st.caption("The cards: mean ± sd over the folds at this threshold. The table: the usual methods on all "
                   "out-of-fold predictions pooled, with the fold-wise sd.")
    with st.form(f"operating_point_{run.id}"):
        first, second, third = st.columns(3)
        method = first.selectbox("Threshold method", THRESHOLD_METHODS, index=THRESHOLD_METHODS.index(choice.method),
                                 format_func=THRESHOLD_METHOD_LABELS.get, key=f"op_method_{run.id}")
        target = first.number_input("Target (sensitivity or specificity)", 0.5, 0.999, float(choice.target or 0.95), 0.01, format="%.3f", key=f"op_target_{run.id}")
        cost = second.number_input("Cost ratio (missed pneumonia : false alarm)", 0.01, 100.0, float(choice.cost_ratio), 0.5, key=f"op_cost_{run.id}")
        stated = second.checkbox("State the expected prevalence", value=choice.prevalence is not None, key=f"op_stated_{run.id}",
                                 help="The share of pneumonia among the children this will be used on; unticked, the training data's.")
        prevalence = second.slider("Expected prevalence", 0.01, 0.99, float(choice.prevalence or 0.3), 0.01, format="%.2f", key=f"op_prevalence_{run.id}")
        scale = third.radio("Probabilities", PROBABILITY_SCALES, index=PROBABILITY_SCALES.index(choice.probabilities), horizontal=True,
                            key=f"op_scale_{run.id}", help="Calibrated: recalibrated on the out-of-fold predictions (see Calibration).")
        submitted = third.form_submit_button("Use this operating point", type="primary")
    if submitted:
        try:
            new = OperatingPointChoice(
                method,
                target=float(target) if method.startswith("target-") else None,
                cost_ratio=float(cost),
                prevalence=float(prevalence) if stated else None,
                probabilities=scale,
            )
            set_operating_point(run, new)
        except ValueError as error:
            show_error(error, "Not changed.")
            return
        st.toast(f"Operating point: {new.describe()} on {new.probabilities} probabilities.", icon="🎯")
        st.rerun()


def _out_of_fold_or_none(run: Run):
    """The run's out-of-fold predictions, or None (a stopped or old run)."""
    try:
        return read_out_of_fold(run)
    except ValueError:
        return None


def calibration_ui(run: Run, evaluations: list[dict]) -> None:
    """Draws reliability diagrams with ECE and Brier: out-of-fold raw and calibrated, and every evaluation."""
    stored = run.read_json(CALIBRATION_FILE)
    if not stored:
        st.info("This run has no calibration (it was made before calibrations were fitted, or it was stopped).", icon="ℹ️")
        return
    calibration = stored["calibration"]
    fitted = f"temperature {calibration['temperature']:.2f}" if calibration["method"] == "temperature" else (
        f"Platt: slope {calibration['platt_slope']:.2f}, intercept {calibration['platt_intercept']:.2f}")
    st.caption(f"Calibration **{calibration['method']}** ({fitted}), fitted on {stored['n']} {stored['fitted_on']}.")
    rows, curves = [], {}
    for scale in ("raw", "calibrated"):
        summary = stored["out_of_fold"][scale]
        rows.append({"predictions": f"out-of-fold, {scale}", "ECE": summary["ece"], "Brier": summary["brier"]})
        curves[f"out-of-fold {scale}"] = summary["bins"]
    for evaluation in evaluations:
        for scale, summary in (evaluation.get("calibration") or {}).items():
            if summary:
                rows.append({"predictions": f"{evaluation['name']}, {scale}", "ECE": summary["ece"], "Brier": summary["brier"]})
                curves[f"{evaluation['name']} {scale}"] = summary["bins"]
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(evaluation_figures.reliability_figure(curves), key=f"reliability_{run.id}")
    with right:
        widgets.metrics_table(pd.DataFrame(rows))
        st.caption("ECE: the mean gap between predicted probability and observed frequency over ten bins. Brier: the "
                   "mean squared error of the probability. A well calibrated 0.8 means pneumonia in 8 of 10 such X-rays.")


def decision_curve_ui(run: Run, evaluations: list[dict]) -> None:
    """Draws net benefit against threshold probability: out-of-fold and every evaluation, with treat-all and treat-none."""
    summary = run.summary() or {}
    curves = {}
    if summary.get("decision_curve"):
        curves["out-of-fold"] = summary["decision_curve"]
    for evaluation in evaluations:
        if evaluation.get("decision_curve"):
            curves[evaluation["name"]] = evaluation["decision_curve"]
    if not curves:
        st.info("No decision curve: this run has none stored (three-class, stopped, or made before decision curves).", icon="ℹ️")
        return
    st.plotly_chart(evaluation_figures.decision_curve_figure(curves), key=f"decision_curve_{run.id}")
    st.caption(
        "Net benefit (Vickers & Elkin 2006) weighs true positives against false positives at the exchange rate a "
        "threshold probability implies: treating at 20 % means one accepts four false alarms per pneumonia found. "
        "Where the model's curve lies above treat-all and treat-none, using it beats both. Calibrated probabilities; "
        "treat-all is drawn for the first set of predictions."
    )


def score_distributions_ui(run: Run, evaluations: list[dict]) -> None:
    """Draws the score distribution of each true class: out-of-fold against a chosen evaluation."""
    out_of_fold = _out_of_fold_or_none(run)
    if out_of_fold is None or len(out_of_fold.class_names) != 2:
        return
    scale = (run.summary() or {}).get("probabilities", "raw")
    histograms = {"out-of-fold": score_histogram(out_of_fold.labels, out_of_fold.scaled(scale)[:, 1], out_of_fold.class_names)}
    with_histograms = [evaluation for evaluation in evaluations if evaluation.get("score_histogram")]
    if with_histograms:
        names = [evaluation["name"] for evaluation in with_histograms]
        chosen = st.selectbox("Against", names, index=len(names) - 1, key=f"scores_against_{run.id}")
        histograms[chosen] = next(item for item in with_histograms if item["name"] == chosen)["score_histogram"]
    st.plotly_chart(evaluation_figures.score_distribution_figure(histograms), key=f"scores_{run.id}")
    st.caption("Solid: out-of-fold; dashed: the evaluation. Normal films drifting to the right on new data is the "
               "shift that costs specificity.")


def evaluations_ui(run: Run, evaluations: list[dict]) -> None:
    """Draws the evaluate-a-folder action and every evaluation's details."""
    evaluate_folder_ui(run)
    if not evaluations:
        return
    for evaluation in reversed(evaluations):
        what = "Held-out test split" if evaluation["name"] == "test" else evaluation["name"]
        title = f"{what} · {evaluation['n_images']} images · {evaluation['split']} of {evaluation['data_dir']}"
        with st.expander(title, expanded=evaluation is evaluations[-1]):
            evaluation_detail_ui(run, evaluation)


def evaluation_detail_ui(run: Run, evaluation: dict) -> None:
    """Draws one evaluation: cards with the AUC interval, notes and leakage, confusion matrix and ROC."""
    metrics = evaluation["metrics"]
    class_names = evaluation["class_names"]
    what = "Held-out test split" if evaluation["name"] == "test" else f"Evaluation {escape_markdown(evaluation['name'])}"
    models = evaluation.get("models") or f"{len(evaluation['folds_used'])} fold models"
    tta = " with test-time augmentation" if evaluation.get("tta") else ""
    st.markdown(f"##### {what} ({evaluation['n_images']} images, ensemble of {models}{tta})")
    for note in evaluation_notes(evaluation):
        st.warning(escape_markdown(note), icon="⚠️")
    if evaluation.get("synthetic"):
        st.caption("🧪 **Synthetic demo data — not real X-rays.**")
    if evaluation.get("shift"):
        from zoidberg.ui.adaptation_view import shift_ui

        shift_ui(evaluation["shift"])
    interval = evaluation.get("auc_ci") or {}
    cards = [("AUC", metrics.get("roc_auc"), f"[{format_number(interval.get('low'))}, {format_number(interval.get('high'))}]" if interval.get("low") is not None else None)]
    cards += [(label, metrics.get(name), None) for name, label in (("accuracy", "Accuracy"), ("sensitivity", "Sensitivity"), ("specificity", "Specificity")) if name in metrics]
    values = evaluation.get("predictive_values") or {}
    if values:
        cards.append(("PPV / NPV", None, None))
    columns = st.columns(len(cards))
    for column, (label, value, delta) in zip(columns, cards):
        if label == "PPV / NPV":
            column.metric(label, f"{format_number(values.get('ppv'), 2)} / {format_number(values.get('npv'), 2)}",
                          help=f"At prevalence {values['prevalence']:.1%} ({values['source']}).")
        else:
            column.metric(label, format_number(value), delta, delta_color="off", delta_arrow="off", border=True)
    threshold_text = f"threshold {format_number(evaluation['threshold'])} on {evaluation['scale']} probabilities" if len(class_names) == 2 else "most probable class"
    scored = f"scored in {evaluation.get('seconds', 0):.1f} s"
    if evaluation.get("tta") and evaluation.get("scoring_seconds"):
        scored += f" ({evaluation['scoring_seconds']:.1f} s of forward passes: 4 test-time variants per image)"
    which = evaluation.get("models") if evaluation.get("models") and "member" in evaluation["models"] else (
        f"Folds {', '.join(map(str, evaluation['folds_used']))} of {evaluation['n_splits']}")
    st.caption(f"{which}, {threshold_text}; {len(evaluation.get('skipped') or [])} file(s) skipped; {scored}.")
    left, right = st.columns(2)
    with left:
        if metrics.get("confusion_matrix"):
            st.plotly_chart(figures.confusion_matrix_figure(metrics["confusion_matrix"], class_names, title="Confusion matrix"),
                            key=f"evaluation_cm_{run.id}_{evaluation['name']}")
    with right:
        curves = evaluation.get("roc") or {}
        if any(curve.get("fpr") for curve in curves.values()):
            points = {label: point for label, curve in curves.items()
                      if len(class_names) == 2 and (point := figures.nearest_threshold_point(curve, evaluation["threshold"]))}
            st.plotly_chart(figures.roc_figure(curves, threshold_points=points, title="ROC curve"), key=f"evaluation_roc_{run.id}_{evaluation['name']}")
        else:
            st.caption("No ROC curve: this folder holds one class.")


def _split_of(data_dir: str) -> str:
    """"test" when a folder has a test split, else "all" (what --split auto scores)."""
    try:
        return "test" if any(split == "test" for split, _, _ in find_class_folders(data_dir)) else "all"
    except (DatasetError, OSError):
        return "all"


def evaluate_folder_ui(run: Run) -> None:
    """Draws "Evaluate on another folder": the folder, split and name, then follows the background evaluation."""
    st.markdown("**Evaluate on another folder**")
    left, middle, right = st.columns([4, 1.3, 2], vertical_alignment="bottom")
    folder = left.text_input("Labeled folder (Kaggle or flat layout)", key=f"evaluate_folder_{run.id}",
                             placeholder="/data/hospital-b or a hold-out from `python -m zoidberg holdout`")
    split = middle.selectbox("Split", ("auto", "test", "all"), key=f"evaluate_split_{run.id}",
                             help="auto: the folder's test/ split when it has one, else every image.")
    default_name = ""
    if folder.strip():
        try:
            default_name = evaluation_name(folder.strip(), _split_of(folder.strip()) if split == "auto" else split)
        except ValueError:
            default_name = ""
    name = right.text_input("Name", value=default_name, key=f"evaluate_name_{run.id}_{default_name}")
    force_column, tta_column, site_column = st.columns(3)
    force = force_column.checkbox("Score again even if stored", key=f"evaluate_force_{run.id}")
    tta = tta_column.checkbox(
        "Test-time augmentation", value=bool(run.config.get("tta", False)), key=f"evaluate_tta_{run.id}",
        help="Average each image over 4 variants (identity, a 90 % zoom, darker, brighter): 4x the forward passes, "
        "so about 4x the scoring time; frozen-backbone runs then cannot use their cached features.",
    )
    other_site = site_column.checkbox(
        "From another site", key=f"evaluate_other_site_{run.id}",
        help="The folder comes from another hospital: a file-name patient number that also names a training patient is "
        "another child there. Identical and near-duplicate films are still checked.",
    )
    if st.button("🧪 Evaluate", key=f"evaluate_start_{run.id}", disabled=not folder.strip()):
        try:
            from zoidberg.data.roots import check_folder_allowed

            path = check_folder_allowed(folder.strip())
            if not path.is_dir():
                raise ValueError(f"{folder.strip()} does not exist or is not a folder.")
            find_class_folders(path)
            jobs.start_evaluation(run.id, str(path.resolve()), split=split, name=name.strip() or default_name, force=force, tta=tta, other_site=other_site, runs_dir=state.runs_dir())
            st.session_state.setdefault("zoidberg_evaluation_jobs", {})[run.id] = name.strip() or default_name
        except (ValueError, OSError, DatasetError) as error:
            show_error(error, "Not evaluated.")
    job_name = st.session_state.get("zoidberg_evaluation_jobs", {}).get(run.id)
    if job_name:
        st.fragment(run_every=widgets.POLL_SECONDS)(_evaluation_job_fragment)(run.id, job_name)


def _evaluation_job_fragment(run_id: str, name: str) -> None:
    """Follows a background evaluation until it completes (then redraws the page) or fails (then says why)."""
    run = state.run_store().get(run_id)
    job = jobs.evaluation_job_state(run, name)
    if job is None:
        return
    if job["state"] == "running":
        st.info(f"Evaluating on `{escape_markdown(job['data_dir'])}` in a background process (scoring, then the "
                "patient bootstrap) ...", icon="⏳")
        return
    st.session_state.get("zoidberg_evaluation_jobs", {}).pop(run_id, None)
    if job["state"] == "failed":
        show_error(job["error"], f"Evaluation {name} failed:")
        return
    st.rerun()


def honest_numbers_ui(run: Run) -> None:
    """Draws the whole section: the gap, then tabs for the operating point, calibration, decision curve and evaluations."""
    evaluations = current_evaluations(run)
    st.markdown("##### Cross-validation against new data")
    gap_table_ui(run, evaluations)
    tabs = st.tabs(["Evaluations", "Operating point", "Calibration", "Decision curve", "Score distributions", "Errors", "Where it looks"])
    with tabs[0]:
        evaluations_ui(run, evaluations)
    with tabs[1]:
        operating_point_ui(run)
    with tabs[2]:
        calibration_ui(run, evaluations)
    with tabs[3]:
        decision_curve_ui(run, evaluations)
    with tabs[4]:
        score_distributions_ui(run, evaluations)
    with tabs[5]:
        from zoidberg.ui.gallery import gallery_ui

        gallery_ui(run, evaluations)
    with tabs[6]:
        from zoidberg.ui.attention_view import attention_ui

        attention_ui(run, evaluations)
