"""`python manage.py deliveries replay --status dead --channel email` (or
`--ids 1,2,3`): dead letters and failures queued again, with a progress bar;
`deliveries list --status dead` shows the newest of them."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from common.errors import ClarionError
from notifications.services.deliveries import (
    DeliveryFilter,
    ReplaySelection,
    deliveries_page,
    deliveries_replay_chunks,
    deliveries_replay_count,
    replay_selection_parse,
)


class Command(BaseCommand):
    help = "List or replay failed and dead deliveries."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        replay = sub.add_parser("replay", help="Queue failed or dead deliveries again.")
        replay.add_argument("--status", choices=["dead", "failed"])
        replay.add_argument("--channel")
        replay.add_argument("--ids", help="Comma-separated delivery ids.")
        replay.add_argument("--dry-run", action="store_true", help="Only count them.")
        listing = sub.add_parser("list", help="The newest failed or dead deliveries.")
        listing.add_argument("--status", choices=["dead", "failed"], default="dead")
        listing.add_argument("--channel")
        listing.add_argument("--limit", type=int, default=20)

    def handle(self, *args, action: str, **options):
        if action == "list":
            return self._list(**options)
        return self._replay(**options)

    def _selection(self, options) -> ReplaySelection:
        body: dict = {}
        if options.get("ids"):
            try:
                body["ids"] = [int(i) for i in options["ids"].split(",") if i.strip()]
            except ValueError as exc:
                raise CommandError("--ids must be comma-separated delivery ids") from exc
        if options.get("status"):
            body["status"] = options["status"]
        if options.get("channel"):
            body["channel"] = options["channel"]
        try:
            return replay_selection_parse(body)
        except ClarionError as exc:
            fields = "; ".join(f"{k}: {' '.join(v)}" for k, v in (exc.errors or {}).items())
            raise CommandError(f"{exc} {fields}") from exc

    def _replay(self, **options) -> None:
        selection = self._selection(options)
        total = deliveries_replay_count(selection)
        if options["dry_run"] or not total:
            self.stdout.write(f"{total} deliveries would be replayed.")
            return
        replayed = 0
        with tqdm(total=total, unit="delivery", file=self.stderr, disable=None) as bar:
            for n in deliveries_replay_chunks(selection):
                replayed += n
                bar.update(n)
        self.stdout.write(
            self.style.SUCCESS(
                f"{replayed} deliveries queued again; the dispatch sweep sends them."
            )
        )

    def _list(self, *, status: str, channel: str | None, limit: int, **_) -> None:
        rows, _ = deliveries_page(
            where=DeliveryFilter(status=status, channel=channel), cursor=None, limit=limit
        )
        for row in rows:
            last = row["attempts"][-1] if row["attempts"] else {}
            self.stdout.write(
                f"{row['id']:>10}  {row['channel']:<8} {row['recipient'][:24]:<24} "
                f"{row['reason'] or '-':<20} {last.get('error', '')[:60]}"
            )
        self.stdout.write(f"{len(rows)} shown (newest first).")
