"""python -m zoidberg predict --dicomweb: the films of PACS studies through a run, results written back on request."""

from __future__ import annotations

import json

from zoidberg.cli.options import CliError


def add_pacs_options(predict) -> None:
    """Adds --dicomweb, --study, --since, --until, --patient-id, --accession and --store-results to predict."""
    pacs = predict.add_argument_group(
        "from a PACS (DICOMweb)", "Credentials come from $ZOIDBERG_DICOMWEB_USER and $ZOIDBERG_DICOMWEB_PASSWORD, or "
        "$ZOIDBERG_DICOMWEB_TOKEN (bearer); never from the command line. Reading never changes the PACS.")
    pacs.add_argument("--dicomweb", metavar="URL", default=None, help="The PACS's DICOMweb root, e.g. http://localhost:8042/dicom-web.")
    pacs.add_argument("--study", metavar="UID", action="append", default=None, help="A StudyInstanceUID to predict (repeatable).")
    pacs.add_argument("--since", metavar="DATE", default=None, help="Predict the studies from this date on (YYYY-MM-DD).")
    pacs.add_argument("--until", metavar="DATE", default=None, help="... up to this date (with --since).")
    pacs.add_argument("--patient-id", default="", help="... of this PatientID only.")
    pacs.add_argument("--accession", default="", help="... with this AccessionNumber only.")
    pacs.add_argument("--store-results", action="store_true", help="Write a DICOM report (SR) and a Grad-CAM capture (SC) of each "
                      "diagnosed film into its study. Without it, nothing is written.")


def command_predict_pacs(args) -> int:
    from zoidberg.cli.prediction_lines import log_records, prediction_line, write_predictions_csv
    from zoidberg.inference.loading import load_ensemble
    from zoidberg.inference.record import REFUSED
    from zoidberg.integrations.dicomweb import connection_from, make_client, search_studies, secrets_file_section
    from zoidberg.integrations.pacs_predict import predict_study, store_results

    if not args.study and not (args.since or args.patient_id or args.accession):
        raise CliError("Say which studies: --study UID, or --since DATE (with --until, --patient-id, --accession).")
    if args.until and not args.since:
        raise CliError("--until needs --since.")
    connection = connection_from(args.dicomweb, secrets_file_section())
    ensemble = load_ensemble(args.run, runs_dir=args.runs_dir)
    threshold = ensemble.threshold if args.threshold is None else args.threshold
    client = make_client(connection)
    studies = list(args.study or [])
    if not studies:
        found = search_studies(client, connection, patient_id=args.patient_id, accession=args.accession, since=args.since, until=args.until)
        studies = [study["StudyInstanceUID"] for study in found]
        if not args.json:
            print(f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'} found at {connection.url}.")
    records, left_out, written = [], 0, []
    for study_uid in studies:
        predictions, results = predict_study(ensemble, client, connection, study_uid, threshold=threshold)
        left_out += results
        if args.store_results:
            written += store_results(ensemble, client, connection, predictions)
        records += [prediction.record for prediction in predictions]
    if args.csv:
        write_predictions_csv(args.csv, records, list(ensemble.class_names))
    log_records(args, records)
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        for record in records:
            print(prediction_line(record, threshold, where=f"{record['study_uid']} / {record['file']}"))
        diagnosed = sum(record.get("prediction") not in (None, REFUSED) for record in records)
        print(f"{len(records)} film(s) in {len(studies)} stud{'y' if len(studies) == 1 else 'ies'}: {diagnosed} diagnosed, "
              f"{len(records) - diagnosed} refused or unreadable" + (f"; {left_out} report or capture object(s) left out" if left_out else "") + ".")
        if args.store_results:
            print(f"Wrote {len(written)} object(s) back (a report and a Grad-CAM capture per diagnosed film).")
        if args.csv:
            print(f"Wrote {len(records)} rows to {args.csv}")
    return 0 if all("error" not in record for record in records) else 1
