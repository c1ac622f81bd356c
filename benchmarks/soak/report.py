"""What a soak run says: the plan before it starts, the figures and the verdict after."""

from __future__ import annotations

from collections import Counter

from benchmarks.soak.plan import RESTARTS, Plan


def planned(plan: Plan) -> str:
    kinds = Counter(fault.kind for fault in plan.faults)
    uploads = sum(len(game.uploads) for game in plan.games)
    watchers = sum(len(game.watchers) for game in plan.games)
    vanishing = sum(1 for game in plan.games for upload in game.uploads if upload.vanishes_at is not None)
    return (
        f"soak: seed {plan.seed}, {plan.seconds / 60:g} min, {len(plan.games)} games "
        f"({plan.scale.games} at once, time x{plan.scale.compression:g}), "
        f"{uploads} uploads, {watchers} watchers, "
        f"{len(plan.hostile)} hostile cases; faults: "
        + ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
        + f", blackhole {vanishing}"
    )


def passed(outcome: dict, strict_slopes: bool) -> bool:
    """Nothing lost, no problem, every kind of fault done, and (for a long run) flat."""
    if outcome["replays_lost"] or outcome["bytes_lost"] or outcome["problems"]:
        return False
    one_life = outcome["plan"].get("one_life", False)
    if not all(count > 0 for kind, count in outcome["faults"].items() if not (one_life and kind in RESTARTS)):
        return False
    judged = [slope["flat"] for slope in outcome["slopes"].values() if slope["flat"] is not None]
    return not strict_slopes or all(judged)


def verdict(slope: dict) -> str:
    """A fitted series' bound and verdict, as ``flat.slopes`` gives them (no bound: not judged)."""
    if slope["flat"] is None:
        return "(shown, not judged)"
    return f"(bound {slope['bound_per_hour']}: {'flat' if slope['flat'] else 'NOT FLAT'})"


def text(outcome: dict) -> str:
    faults = ", ".join(f"{kind} {count}" for kind, count in outcome["faults"].items())
    o = outcome
    lines = [
        f"seed {outcome['plan']['seed']}: {outcome['games_started']} games, {outcome['uploads']} uploads, "
        f"{outcome['watchers']} watchers, {outcome['hostile_cases']} hostile cases; "
        f"median load {outcome['load_median']}",
        f"faults: {faults}; {outcome['faults_overlapping']} began while another was going on "
        f"({outcome['storms']} storms); restarts took {outcome['restart_seconds']} s",
        f"packets: {outcome['packets']}",
        "at each kill or deploy, uploads sending / those whose spool file lagged what they had sent"
        f" a second before / bytes: {outcome['durability_at_restarts']}",
        f"replays lost: {o['replays_lost']}; bytes lost beyond what a fault allows: {o['bytes_lost']}",
        f"saved {o['saved']}: {o['exact']} exact (no fault cut them), {o['cut']} cut by a kill or a deploy"
        f" or, {o.get('cut_by_network', 0)} of them, by the network losing every upload"
        f" ({o['cut_kept_durable']} kept all that was durable, {o['cut_before_anything_durable']} cut before"
        f" anything was); rows right: {o['rows_ok']}",
        f"watchers checked {o['watchers_checked']}, got the whole replay {o['watchers_whole']}; still open"
        f" at the end (game, transport, slow, connected, body bytes): {o['watchers_open_at_end']}",
        f"drained {outcome['drain_seconds']} s after the last arrival; quarantined: "
        f"{len(outcome['server']['quarantined'])}; log lines by level: {outcome['server']['log_levels']}",
        "slopes over the last three quarters (per hour, within lives):",
    ]
    for name, slope in outcome["slopes"].items():
        lines.append(f"  {name}: {slope['per_hour']} {slope['unit']} {verdict(slope)}")
    lines.append(f"problems: {outcome['problem_counts'] or 'none'}")
    lines.extend(f"  {problem}" for problem in outcome["problems"])
    return "\n".join(lines)
