"""label-next (the next site films to label, and why) and label (one label appended to a labels file, as the Label page writes it)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from zoidberg.adaptation.ordering import ORDER_HELP, ORDERS
from zoidberg.cli.options import CliError, add_runs_dir
from zoidberg.data.site_labels import LABELS


def add_parsers(commands) -> None:
    """Adds label-next and label."""
    next_films = commands.add_parser(
        "label-next",
        help="Name the next site films to label, the most useful first, with why each was chosen.",
        description="Scores the site's unlabeled films with a run (as predict does: decoded, scored, gated) and names the next ones "
        "to label, leaving out every film the labels file already holds. The gate runs first: films it refuses are asked "
        "'not usable?' (one in ten at most), never offered as a diagnosis to confirm. A script, a worklist or a viewer labels them "
        "and appends each label with `python -m zoidberg label`; `adapt --labels` then learns from the file.",
    )
    next_films.add_argument("--run", required=True, metavar="RUN_ID", help="The run that scores the candidates (the one you will adapt).")
    source = next_films.add_mutually_exclusive_group(required=True)
    source.add_argument("--films", nargs="+", metavar="DIR", help="The site's films: folders (recursively) or files.")
    source.add_argument("--dicomweb", metavar="URL", help="A PACS's DICOMweb root; the films of --study or --since studies are the candidates.")
    pacs = next_films.add_argument_group("from a PACS", "Credentials as for predict --dicomweb ($ZOIDBERG_DICOMWEB_USER/_PASSWORD or _TOKEN).")
    pacs.add_argument("--study", metavar="UID", action="append", default=None, help="A StudyInstanceUID (repeatable).")
    pacs.add_argument("--since", metavar="DATE", default=None, help="The studies from this date on (YYYY-MM-DD).")
    pacs.add_argument("--until", metavar="DATE", default=None, help="... up to this date.")
    pacs.add_argument("--patient-id", default="", help="... of this PatientID only.")
    pacs.add_argument("--accession", default="", help="... with this AccessionNumber only.")
    next_films.add_argument("--labels", metavar="FILE", default=None, help="The labels so far: films it names are never named again.")
    next_films.add_argument("--count", type=int, default=20, metavar="K", help="How many films to name [default: 20].")
    next_films.add_argument("--order", choices=ORDERS, default="stratified",
                            help="; ".join(f"{name}: {text}" for name, text in ORDER_HELP.items()) + ".")
    next_films.add_argument("--seed", type=int, default=0, help="Seed of the draw [default: 0].")
    next_films.add_argument("--json", action="store_true", help="Print a JSON list: file, ask, chosen_by, reason (and a PACS film's UIDs).")
    add_runs_dir(next_films)
    next_films.set_defaults(handler=command_label_next)

    label = commands.add_parser(
        "label",
        help="Append one label to a labels file (whole or not at all), as the Label page does.",
        description="Appends one line to a JSON-lines labels file, flushed to disk before it returns: a crash loses at most this label.",
    )
    label.add_argument("film", metavar="FILE_OR_SOP_UID", help="The film: its path, or a PACS film's SOP Instance UID (with --study and --series).")
    label.add_argument("label", choices=(*LABELS, "retracted"), help="What the reader says; 'retracted' takes back this reader's last label of the film.")
    label.add_argument("--labels", required=True, metavar="FILE", help="The labels file (.jsonl), created if missing.")
    label.add_argument("--reader", default="", help="Who labeled it [default: $USER].")
    label.add_argument("--chosen-by", default="manual", help="How the film was chosen (label-next's chosen_by) [default: manual].")
    label.add_argument("--reason", default="", help="Why it was chosen (label-next's reason).")
    label.add_argument("--patient", default="", help="The patient id (default: read from the file name).")
    label.add_argument("--study", default="", help="StudyInstanceUID of a PACS film.")
    label.add_argument("--series", default="", help="SeriesInstanceUID of a PACS film.")
    label.set_defaults(handler=command_label)


def command_label_next(args) -> int:
    from zoidberg.adaptation.next_films import choose_next_films
    from zoidberg.data.site_labels import read_labels
    from zoidberg.inference.loading import load_ensemble

    if args.count < 1:
        raise CliError("--count must be at least 1.")
    labels = read_labels(args.labels) if args.labels and _exists(args.labels) else None
    ensemble = load_ensemble(args.run, runs_dir=args.runs_dir)
    if not ensemble.is_binary:
        raise CliError(f"Run {args.run} is three-class: labeling for adaptation needs a normal-vs-pneumonia run.")
    records = _pacs_records(ensemble, args) if args.dicomweb else _file_records(ensemble, args.films)
    if not records:
        raise CliError("No readable film among the candidates.")
    films = choose_next_films(records, labels, count=args.count, order=args.order, threshold=ensemble.threshold, random_state=args.seed)
    if args.json:
        print(json.dumps([film.to_dict() for film in films], indent=2))
        return 0
    labeled = 0 if labels is None else len(labels.films) + len(labels.disagreements)
    print(f"{len(records)} candidate film(s), {labeled} labeled already; the next {len(films)} to label:", file=sys.stderr)
    for number, film in enumerate(films, start=1):
        question = "not usable?" if film.ask != "label" else "label"
        print(f"{number:>3}. {film.file}  [{question}, {film.chosen_by}] {film.reason}")
    if not films:
        print("Nothing left to label among these films.")
    return 0


def _exists(path: str) -> bool:
    return Path(path).expanduser().is_file()


def _file_records(ensemble, given: list[str]) -> list[dict]:
    """The prediction records of every image under the folders given."""
    from zoidberg.data.files import collect_images
    from zoidberg.inference.scoring import predict_files

    paths, _ = collect_images(given)
    if not paths:
        raise CliError(f"No image file in {', '.join(given)}.")
    return predict_files(ensemble, paths, door="label")


def _pacs_records(ensemble, args) -> list[dict]:
    """The prediction records of the films of the studies asked for (read only)."""
    from zoidberg.integrations.dicomweb import connection_from, make_client, search_studies, secrets_file_section
    from zoidberg.integrations.pacs_predict import predict_study

    if not args.study and not (args.since or args.patient_id or args.accession):
        raise CliError("Say which studies: --study UID, or --since DATE (with --until, --patient-id, --accession).")
    connection = connection_from(args.dicomweb, secrets_file_section())
    client = make_client(connection)
    studies = list(args.study or [])
    if not studies:
        found = search_studies(client, connection, patient_id=args.patient_id, accession=args.accession, since=args.since, until=args.until)
        studies = [study["StudyInstanceUID"] for study in found]
    records = []
    for study_uid in studies:
        predictions, _ = predict_study(ensemble, client, connection, study_uid, door="label")
        records += [{**prediction.record, "sop_uid": prediction.instance.sop_uid} for prediction in predictions]
    return records


def command_label(args) -> int:
    import getpass

    from zoidberg.data.site_labels import LabelEntry, append_label

    is_pacs = bool(args.study)
    # A path is stored from the labels file's folder, where every reader of the file starts relative paths.
    film = "" if is_pacs else os.path.relpath(Path(args.film).expanduser().resolve(), Path(args.labels).expanduser().resolve().parent)
    if not is_pacs and not Path(args.film).expanduser().is_file():
        raise CliError(f"{args.film} is not a file: name the film's path, or a SOP Instance UID with --study.")
    entry = LabelEntry(
        file=film, label=args.label, reader=args.reader or getpass.getuser(), chosen_by=args.chosen_by,
        reason=args.reason, patient=args.patient, study_uid=args.study, series_uid=args.series, sop_uid=args.film if is_pacs else "",
    )
    append_label(args.labels, entry)
    return 0
