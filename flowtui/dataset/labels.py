"""The scoring errors (scoring.py's rules and chair.py's vocabulary raise them)."""


class ScoringError(ValueError):
    """A rule that does not exist, or a reference a rule cannot score."""


class LabelError(ScoringError):
    """A reference answer the rule cannot score (recorded as that sample's error)."""


class UnknownRuleError(ScoringError):
    """No scoring rule has that name."""
