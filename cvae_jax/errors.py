"""The one exception type that reaches users as a clean message."""


class CvaeError(Exception):
  """Bad input or state a user can fix; launchers print it and exit 2."""


class DataError(CvaeError):
  """A data file is missing, empty or malformed."""
