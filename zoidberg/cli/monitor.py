"""python -m zoidberg monitor: the films a run scored, window by window, against the films it knows, with an alert."""

from __future__ import annotations

import json

from zoidberg.cli.options import CliError, add_runs_dir


def add_parsers(commands) -> None:
    """Adds monitor."""
    monitor = commands.add_parser(
        "monitor", help="Watch a run after go-live: refusals, pneumonia share and shift per week, with an alert.",
        description="Reads the prediction records a run wrote (serve --records-log, predict --records-log, predict --json, a "
        "predictions CSV) or scores a PACS's studies of a period, and reports each window: films seen, refused (by reason), "
        "the share called pneumonia (raw and corrected for prevalence by EM), the shift against the films the run knows (an "
        "adapted run's site films, and its parent's training films), and an alert with a sentence. The alert rule is in the "
        "README (\"After go-live\").",
    )
    monitor.add_argument("--run", required=True, help="The run whose records are watched (an adapted run: against its site films).")
    source = monitor.add_mutually_exclusive_group(required=True)
    source.add_argument("--records", nargs="+", metavar="FILE", help="Records files; with several and no --window, one window per file.")
    source.add_argument("--dicomweb", metavar="URL", help="Score the PACS's studies of --since/--until (read only), one window per week.")
    monitor.add_argument("--since", metavar="DATE", help="With --dicomweb: the studies from this date on (YYYY-MM-DD).")
    monitor.add_argument("--until", metavar="DATE", help="With --dicomweb: ... up to this date.")
    monitor.add_argument("--window", default=None, help="week, day or N (every N records) [default: week; one per file when "
                         "several files are given].")
    monitor.add_argument("--json", action="store_true", help="Print one JSON object per window (a list).")
    add_runs_dir(monitor)
    monitor.set_defaults(handler=command_monitor)


def command_monitor(args) -> int:
    from zoidberg.monitoring.reference import load_references
    from zoidberg.monitoring.watch import make_windows, watch_window
    from zoidberg.runs.store import RunStore

    try:
        run = RunStore(args.runs_dir).get(args.run)
        references = load_references(run)
    except ValueError as error:
        raise CliError(str(error)) from None
    windows = _windows(args, make_windows)
    if not windows:
        raise CliError("No prediction record to watch.")
    summaries = [watch_window(name, records, references) for name, records in windows]
    if args.json:
        print(json.dumps(summaries, indent=2))
        return 0
    print(f"Run {run.id}, against its {references[0].name} ({len(references[0].positive)} films):")
    for summary in summaries:
        share = summary["pneumonia_share"]
        em = summary["pneumonia_share_em"]
        print(f"{'ALERT' if summary['alert'] else 'quiet'}  {summary['window']}: {summary['films']} films, {summary['refused']} refused"
              + (f", {share:.0%} called pneumonia ({em:.0%} by EM)" if share is not None and em is not None else "")
              + f". {summary['why']}")
    return 0


def _windows(args, make_windows) -> list[tuple[str, list[dict]]]:
    """The windows of the records files (one per file when several and no --window) or of the PACS's studies."""
    from zoidberg.monitoring.records_log import read_records

    if args.window is not None and args.window not in ("week", "day") and not (str(args.window).isdigit() and int(args.window) >= 1):
        raise CliError(f"--window must be week, day or a number of records (got {args.window!r}).")
    if args.dicomweb:
        return make_windows(_pacs_records(args), args.window or "week")
    try:
        per_file = [(path, read_records(path)) for path in args.records]
    except ValueError as error:
        raise CliError(str(error)) from None
    if len(per_file) > 1 and args.window is None:
        return per_file
    try:
        return make_windows([record for _, records in per_file for record in records], args.window or "week")
    except ValueError as error:
        raise CliError(str(error)) from None


def _pacs_records(args) -> list[dict]:
    """The records of the studies of a period, each dated by its study (predict_study: read only)."""
    from zoidberg.inference.loading import load_ensemble
    from zoidberg.integrations.dicomweb import connection_from, make_client, search_studies, secrets_file_section
    from zoidberg.integrations.pacs_predict import predict_study

    if not args.since:
        raise CliError("Say which period: --since DATE (and --until DATE).")
    connection = connection_from(args.dicomweb, secrets_file_section())
    client = make_client(connection)
    ensemble = load_ensemble(args.run, runs_dir=args.runs_dir)
    records = []
    for study in search_studies(client, connection, since=args.since, until=args.until):
        predictions, _ = predict_study(ensemble, client, connection, study["StudyInstanceUID"])
        date = study.get("StudyDate") or ""
        when = f"{date[:4]}-{date[4:6]}-{date[6:]}T00:00:00Z" if len(date) == 8 else None
        for prediction in predictions:
            # Windows of a PACS are its studies' dates, not the time they were scored now.
            records.append({**prediction.record, "predicted_at": when or prediction.record["predicted_at"]})
    return records
