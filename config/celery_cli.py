"""`celery -A config clarion ...`: the operator's commands, in the Celery CLI.

Celery 5 adds the click commands named in the `celery.commands` entry-point
group (pyproject.toml) to its own. This module is imported whenever any
`celery` command starts, before Django is set up, so it imports only click,
tqdm and the channel names at the top; each command first loads the app's modules (Django's
setup and the tasks, through Celery's Django fixup) and only then imports the
services it calls. The work is theirs, shared with `manage.py deliveries`,
the admin and the API:

    celery -A config clarion queues
    celery -A config clarion sweeps [--name NAME] [--limit N]
    celery -A config clarion sweep run NAME
    celery -A config clarion dead list [--channel email] [--status dead|failed]
    celery -A config clarion dead replay [--channel email] [--ids 1,2] [--dry-run] [--yes]
"""

from __future__ import annotations

import click
from tqdm import tqdm

from common.choices import EXTERNAL_CHANNELS  # plain values: needs no Django setup


def _setup(ctx: click.Context):
    """The Celery app with Django set up and every task registered."""
    app = ctx.find_root().obj.app
    app.loader.import_default_modules()
    return app


@click.group(help="Clarion operations: queues, sweeps and dead letters.")
def clarion() -> None:
    pass


@clarion.command(help="Messages waiting per queue, and how long fan-out has waited.")
@click.pass_context
def queues(ctx: click.Context) -> None:
    _setup(ctx)
    from notifications.metrics import broker_queue_depths
    from notifications.selectors import fanout_backlog_ages

    depths, unacked = broker_queue_depths()
    ages = fanout_backlog_ages()
    click.echo(f"{'queue':<10} {'messages':>10} {'fan-out backlog':>16}")
    for queue, depth in depths.items():
        click.echo(f"{queue:<10} {depth:>10} {ages.get(queue, 0.0):>15.1f}s")
    click.echo(f"{unacked} messages handed to workers and not yet acknowledged.")


@clarion.command(help="The most recent sweep runs, newest first.")
@click.option("--name", help="Only this sweep (e.g. 'delivery dispatch').")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.pass_context
def sweeps(ctx: click.Context, name: str | None, limit: int) -> None:
    _setup(ctx)
    from notifications.services.sweep_runs import sweep_runs_list

    runs = sweep_runs_list(name=name, limit=limit)
    for run in runs:
        click.echo(
            f"{run.started_at:%Y-%m-%d %H:%M:%S}  {run.name:<20} {run.status:<8}"
            f" {run.duration_ms:>7} ms  examined {run.rows_examined:<8}"
            f" produced {run.events_produced:<6} {run.error[:60]}"
        )
    click.echo(f"{len(runs)} runs shown.")


@clarion.group(help="Run a scheduled sweep.")
def sweep() -> None:
    pass


@sweep.command(name="run", help="Run the sweep NAME now, in this process; the run is recorded.")
@click.argument("name")
@click.pass_context
def sweep_run(ctx: click.Context, name: str) -> None:
    app = _setup(ctx)
    from notifications.schedules import schedules

    by_name = {schedule.name: schedule for schedule in schedules()}
    if name not in by_name:
        raise click.BadParameter(
            f"no sweep {name!r}; one of: {', '.join(sorted(by_name))}", param_hint="NAME"
        )
    # Called, not sent: the task's body runs here, recorded by its sweep_run().
    result = app.tasks[by_name[name].task]()
    click.echo(f"{name}: {result}")


@clarion.group(help="Failed and dead deliveries (the dead-letter queue).")
def dead() -> None:
    pass


_STATUS = click.Choice(["dead", "failed"])
_CHANNEL = click.Choice(EXTERNAL_CHANNELS)


@dead.command(name="list", help="The newest dead (or failed) deliveries.")
@click.option("--status", type=_STATUS, default="dead", show_default=True)
@click.option("--channel", type=_CHANNEL)
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.pass_context
def dead_list(ctx: click.Context, status: str, channel: str | None, limit: int) -> None:
    _setup(ctx)
    from notifications.services.deliveries import DeliveryFilter, deliveries_page

    rows, _ = deliveries_page(
        where=DeliveryFilter(status=status, channel=channel), cursor=None, limit=limit
    )
    for row in rows:
        last = row["attempts"][-1] if row["attempts"] else {}
        click.echo(
            f"{row['id']:>10}  {row['channel']:<8} {row['recipient'][:24]:<24} "
            f"{row['reason'] or '-':<20} {last.get('error', '')[:60]}"
        )
    click.echo(f"{len(rows)} shown (newest first).")


@dead.command(name="replay", help="Queue dead (or failed) deliveries again, due now.")
@click.option("--status", type=_STATUS, default="dead", show_default=True)
@click.option("--channel", type=_CHANNEL)
@click.option("--ids", help="Comma-separated delivery ids (instead of --status/--channel).")
@click.option("--dry-run", is_flag=True, help="Only count them.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def dead_replay(
    ctx: click.Context, status: str, channel: str | None, ids: str | None, dry_run: bool, yes: bool
) -> None:
    _setup(ctx)
    from common.errors import ClarionError
    from notifications.services.deliveries import (
        deliveries_replay_chunks,
        deliveries_replay_count,
        replay_selection_parse,
    )

    body: dict = {"status": status, **({"channel": channel} if channel else {})}
    if ids:
        try:
            body = {"ids": [int(i) for i in ids.split(",") if i.strip()]}
        except ValueError as exc:
            raise click.BadParameter("comma-separated delivery ids", param_hint="--ids") from exc
    try:
        selection = replay_selection_parse(body)
    except ClarionError as exc:
        fields = "; ".join(f"{k}: {' '.join(v)}" for k, v in (exc.errors or {}).items())
        raise click.UsageError(f"{exc} {fields}") from exc
    total = deliveries_replay_count(selection)
    if dry_run or not total:
        click.echo(f"{total} deliveries would be replayed.")
        return
    if not yes:
        click.confirm(f"Replay {total} deliveries?", abort=True, err=True)
    replayed = 0
    with tqdm(
        total=total, unit="delivery", file=click.get_text_stream("stderr"), disable=None
    ) as bar:
        for n in deliveries_replay_chunks(selection):
            replayed += n
            bar.update(n)
    click.echo(f"{replayed} deliveries queued again; the dispatch sweep sends them.")
