"""Errors shared by the LLM packages (imports nothing, so models/ and rl/ can both use it).

`ConfigError` is a ValueError about one option of the run: it names the field (the
`TrainConfig` field, or the `make_mesh` argument) and, when the value came from a config
file, that file. The command line (`python -m llm.train`) prints it as one line,
``error: --field-name: message``, and exits with status 2; Python callers get an ordinary
ValueError whose text starts with the field name.

>>> str(ConfigError("delta_v", "must be a finite number, got nan"))
'delta_v: must be a finite number, got nan'
>>> ConfigError("delta_v", "must be a finite number, got nan").flag
'--delta-v'
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad configuration value.

    Attributes:
      field: the option's name (``"learning_rate"``), or None for an error about a config
        file as a whole (missing, unparsable, unknown key).
      message: what was expected and what was given, without the field name.
      source: the config file the value came from, when it came from one.
    """

    def __init__(self, field: str | None, message: str, *, source: str | None = None):
        self.field = field
        self.message = message
        self.source = None if source is None else str(source)
        super().__init__(": ".join(p for p in (self.source, field, message) if p))

    @property
    def flag(self) -> str | None:
        """The field as a command-line flag (``--learning-rate``), or None."""
        return None if self.field is None else "--" + self.field.replace("_", "-")

    def with_source(self, source) -> ConfigError:
        """The same error, marked as coming from the config file ``source``."""
        return ConfigError(self.field, self.message, source=source)
