"""The command line: the same pruning as the function, for one-off prunes, dry runs and checks.

Exit status: 0 the repository now matches its policy (or a dry run finished), 1 the run could not
finish (a deletion, the listing or auth failed), 2 bad usage or configuration (nothing was sent).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace

from cleaner import logs
from cleaner.errors import BadReference, CleanerError, ConfigError
from cleaner.policy import Policy, Rule, TagPattern, load_policy, parse_duration
from cleaner.reference import Repository
from cleaner.settings import Settings

OK, FAILED, USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 too; keep its message, add the hint
        self.print_usage(sys.stderr)
        self.exit(USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m cleaner", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    prune = sub.add_parser("prune", help="prune one repository now")
    prune.add_argument("repository", help="HOST/PATH, e.g. gcr.io/my-project/app")
    _policy_flags(prune)
    _output_flags(prune)

    check = sub.add_parser("check-config", help="validate a policy; show the rule for a path")
    check.add_argument("file", help="the policy file (YAML or JSON); - reads standard input")
    check.add_argument(
        "repository", nargs="*", default=[], help="repository paths to match against it"
    )
    check.add_argument("--json", action="store_true", help="print the result as JSON")

    from cleaner import operate

    operate.add_commands(sub, _policy_flags, _output_flags)
    return parser


def _policy_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="policy file (else CLEANER_CONFIG)")
    parser.add_argument("--keep", type=int, metavar="N", help="keep the N newest images")
    parser.add_argument(
        "--keep-tag",
        action="append",
        metavar="PATTERN",
        help="protect tags matching PATTERN (glob, or re:REGEX); repeatable; replaces the "
        "rule's keep_tags",
    )
    parser.add_argument("--grace", metavar="DURATION", help="keep images younger than this")


def _output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="plan only; change nothing")
    parser.add_argument("--json", action="store_true", help="print a machine-readable report")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log to stderr: -v INFO, -vv DEBUG (every decision)",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(_log_level(args), stream_split=False)
    try:
        if args.command == "check-config":
            return check_config(args)
        if args.command == "prune":
            return prune(args)
        from cleaner import operate

        return operate.run(args)
    except (ConfigError, BadReference) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if getattr(args, "json", False):  # a machine reading stdout gets an answer too
            print(json.dumps({"ok": False, "error": str(exc), "usage_error": True}, indent=2))
        return USAGE


def _log_level(args) -> str:
    return {0: "WARNING", 1: "INFO"}.get(getattr(args, "verbose", 0), "DEBUG")


def load_cli_policy(path: str | None, flag: str = "--config") -> Policy | None:
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                return load_policy(handle.read(), source=path)
        except OSError as exc:
            prefix = f"{flag}: " if flag else ""
            raise ConfigError(f"{prefix}cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(_not_utf8(path, exc)) from None
    text = os.environ.get("CLEANER_CONFIG", "")
    return load_policy(text) if text.strip() else None


def _not_utf8(source: str, exc: UnicodeDecodeError) -> str:
    return f"{source} is not UTF-8 text (byte {exc.start} cannot be decoded); save it as UTF-8"


def rule_for(repo: Repository, policy: Policy | None, args) -> Rule | None:
    """The matching rule with the flags laid over it; with no policy, the flags alone."""
    rule = policy.rule_for(repo) if policy else None
    if rule is None:
        if args.keep is None:
            return None
        rule = Rule(repository=str(repo), keep=args.keep, position=-1)
    if args.keep is not None:
        if args.keep < 0:
            raise ConfigError(f"--keep: {args.keep} is not allowed; use a whole number ≥ 0")
        rule = replace(rule, keep=args.keep, keep_tagged=None, keep_untagged=None)
    if args.keep_tag:
        patterns = tuple(TagPattern.parse(p, "--keep-tag") for p in args.keep_tag)
        rule = replace(rule, keep_tags=patterns)
    if args.grace is not None:
        rule = replace(rule, grace_s=parse_duration(args.grace, "--grace"))
    return rule


def prune(args) -> int:
    from cleaner import report as render
    from cleaner.wiring import build_pruner

    settings = Settings.from_env()
    repo = Repository.parse(args.repository)
    policy = load_cli_policy(args.config)
    rule = rule_for(repo, policy, args)
    if rule is None:
        why = "no rule in the policy matches it" if policy else "no policy and no --keep"
        if policy is None:
            raise ConfigError(f"{repo}: {why}; give --keep N, --config FILE or CLEANER_CONFIG")
        print(f"{repo}: {why}; left alone (give --keep N to prune it anyway)")
        return OK
    dry_run = args.dry_run or settings.dry_run
    pruner = build_pruner(settings, policy, push=not dry_run)
    try:
        result = pruner.prune(repo, rule, dry_run=dry_run)
    except CleanerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if args.json:  # a script reading stdout gets an answer on failure too
            print(render.failure_json(repo, rule, dry_run, exc))
        return FAILED
    if args.verbose:
        from cleaner.function import log_summary

        log_summary(result)  # the function's one-line summary, on stderr
    print(render.to_json(result) if args.json else render.table(result))
    return OK if result.ok else FAILED


def check_config(args) -> int:
    import json

    try:
        policy, matches = _checked_config(args)
    except (ConfigError, BadReference) as exc:
        if not args.json:
            raise
        print(json.dumps({"valid": False, "error": str(exc)}, indent=2))
        return USAGE
    if args.json:
        print(
            json.dumps(
                {
                    "valid": True,
                    "rules": [
                        {"repository": r.repository, "policy": r.describe()} for r in policy.rules
                    ],
                    "matches": {
                        str(repo): (None if rule is None else rule.position)
                        for repo, rule in matches
                    },
                },
                indent=2,
            )
        )
        return OK
    print(f"{args.file}: valid, {len(policy.rules)} rule(s)")
    for rule in policy.rules:
        print(f"  rules[{rule.position}] {rule.repository}: {rule.describe()}")
    for repo, rule in matches:
        if rule is None:
            print(f"{repo}: no rule matches; it is left alone")
        else:
            print(f"{repo}: rules[{rule.position}] {rule.repository} ({rule.describe()})")
    return OK


def _checked_config(args) -> tuple[Policy, list[tuple[Repository, Rule | None]]]:
    """The policy and the rule for each repository; settings the function would refuse at start
    (Settings.from_env) are refused here too, with the same message."""
    Settings.from_env()
    if args.file == "-":
        try:
            text = sys.stdin.read()
        except UnicodeDecodeError as exc:
            raise ConfigError(_not_utf8("standard input", exc)) from None
        policy = load_policy(text, source="standard input")
    elif not args.file:
        raise ConfigError("check-config: give a policy file, or - for standard input")
    else:
        policy = load_cli_policy(args.file, flag="")
    matches = []
    for text in args.repository:
        repo = Repository.parse(text)
        matches.append((repo, policy.rule_for(repo)))
    return policy, matches
