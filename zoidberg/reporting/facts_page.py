"""The report's first page: the model facts the reporting guidelines ask for, as zoidberg.inference.model_facts reads them."""

from __future__ import annotations

from zoidberg.reporting.numbers import estimate as _estimate, interval as _interval, number, percent
from zoidberg.reporting.document import Section, Table
from zoidberg.runs.store import Run


def model_facts_section(run: Run) -> Section:
    """The first page: the model's facts as the reporting guidelines ask them (the model card carries the same)."""
    from zoidberg.inference.model_facts import model_facts

    facts = model_facts(run)
    section = Section("Model facts")
    section.paragraphs.append("What GMLP, TRIPOD+AI, CLAIM and the HTI-1 \"model facts\" ask, in one place, each read from the run's "
                              "own files; export writes the same into model_card.json.")
    data = facts["training_data"]
    rows = [
        ["Intended use", facts["intended_use"]], ["Intended users", facts["intended_users"]], ["Population", facts["population"]],
        ["Out of scope", " ".join(facts["out_of_scope"])], ["Known risks", " ".join(facts["known_risks"])],
        ["Training data", f"{data.get('images')} films of {data.get('patients')} patients ({_counts(data.get('class_counts'))}), "
                          f"{data.get('grouping')}; {_duplicates(data.get('duplicates'))}; folder {data.get('folder')}"],
        ["Model selection", _selection_text(facts["selection"])],
        ["Threshold rule", f"{facts['threshold_rule']['rule']}: {number(facts['threshold_rule']['threshold'])} on "
                           f"{facts['threshold_rule']['probabilities']} probabilities, chosen on {facts['threshold_rule']['chosen_on']}"],
    ]
    for item in facts["evaluations"]:
        intervals = item.get("intervals")
        if intervals:
            text = ", ".join(f"{label} {_estimate(intervals.get(key))}" for key, label in
                             (("roc_auc", "AUC"), ("accuracy", "accuracy"), ("sensitivity", "sensitivity"), ("specificity", "specificity")))
        else:
            text = (f"AUC {number(item['roc_auc'])}{_interval(item['roc_auc_interval'])}, accuracy {percent(item['accuracy'])}, "
                    f"sensitivity {percent(item['sensitivity'])}, specificity {percent(item['specificity'])}")
        rows.append([f"Evaluation: {item['name']}", f"{item['films']} films: {text}"])
        for group in item.get("subgroups") or []:
            rows.append([f"  {item['name']}: {group['subgroup']}", f"{group['measure']} {_estimate(group)} over {group['films']} films "
                         f"of {group['patients']} patients"])
    adaptation = facts["adaptation"]
    if adaptation:
        rows.append(["Adaptation", f"from {adaptation['parent_name'] or ''} ({adaptation['parent']}) on {adaptation['site']} "
                     f"(fingerprint {adaptation['site_fingerprint']}" + (f", labels SHA-256 {adaptation['labels_digest'][:12]}…" if adaptation["labels_digest"] else "")
                     + f"), {adaptation['parts']} patient-grouped parts"])
        for name, block in (("Site, zero-shot", adaptation["zero_shot"]), ("Site, adapted (cross-fitted)", adaptation["cross_fitted"])):
            if block:
                rows.append([name, ", ".join(f"{label} {_estimate(block.get(key))}" for key, label in
                                             (("roc_auc", "AUC"), ("accuracy", "accuracy"), ("sensitivity", "sensitivity"), ("specificity", "specificity"))
                                             if block.get(key))])
        if adaptation["shift"]:
            rows.append(["Shift check", adaptation["shift"]])
    gate = facts["gate"]
    rows.append(["Gate", f"{gate['rule']}; refuses {percent(gate['refused_of_training_films'])} of training films by construction"
                 + (f", {percent(gate['refused_of_site_films'])} of the site's films" if gate["refused_of_site_films"] is not None else "")
                 + f"; {gate['measured']}"])
    calibration = facts["calibration"]
    if calibration:
        rows.append(["Calibration", f"{calibration['method']} on {calibration['fitted_on']}: ECE {number(calibration['ece_raw'])} → "
                                    f"{number(calibration['ece_calibrated'])}"])
    for group in facts["subgroups"]:
        rows.append([f"Subgroup: {group['subgroup']}", f"{group['measure']} {_estimate(group)} over {group['films']} films "
                     f"of {group['patients']} patients (out of fold, decided as the run view decides)"])
    if not facts["subgroups"]:
        rows.append(["Subgroups", "none named by the data: Kermany file names give bacterial and viral pneumonia, DICOM headers "
                                  "give view, sex and age"])
    rows.append(["Monitoring plan", facts["monitoring_plan"]])
    rows.append(["Versions", ", ".join(f"{name} {version}" for name, version in sorted(facts["versions"].items())) or "–"])
    section.tables.append(Table(["", ""], rows))
    return section


def _counts(counts: dict | None) -> str:
    return ", ".join(f"{count} {name}" for name, count in (counts or {}).items()) or "–"


def _duplicates(duplicates: dict | None) -> str:
    if not duplicates:
        return "duplicates not checked"
    return (f"{duplicates.get('exact_images') or 0} exact and {duplicates.get('near_images') or 0} near duplicates found, kept in one "
            f"fold ({duplicates.get('policy')})")


def _selection_text(selection: dict) -> str:
    text = selection["validation"] + (f"; preset {selection['preset']}" if selection.get("preset") else "")
    if selection["members"]:
        text += "; an ensemble of " + ", ".join(f"{member['name']} (CV AUC {number(member['cv_roc_auc'])})" for member in selection["members"])
    if selection.get("tuned_by"):
        text += f"; tuned by run {selection['tuned_by']}"
    return text
