"""Recorder (ARU) metadata: AudioMoth header comments and file names.

AudioMoth firmware writes a sentence into the WAV ``ICMT`` comment, e.g.
``"Recorded at 09:32:00 04/05/2018 (UTC) by AudioMoth 0FE081F80FE081F0 at gain
setting 2 while battery state was 4.3V"``; newer firmware adds
``"... and temperature was 12.8C."`` and spells gain as ``"medium gain"``.
Files re-written by OpenSoundscape carry a JSON blob ``opso_metadata{...}``.
Both are parsed here into plain dicts; anything unrecognised gives an empty
dict, never an error.
"""
from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import re
from pathlib import Path
from zoneinfo import ZoneInfo

from opso_nb.utils import hex_to_time, load_metadata

__all__ = [
    "audiomoth_start_time",
    "parse_audiomoth_comment",
    "parse_audiomoth_metadata",
    "parse_audiomoth_metadata_from_path",
    "parse_opso_metadata",
    "generate_opso_metadata_str",
    "load_metadata",
    "hex_to_time",
]

_AUDIOMOTH = re.compile(
    r"Recorded at (?P<time>\d{2}:\d{2}:\d{2}) (?P<date>\d{2}/\d{2}/\d{4}) "
    r"\((?P<tz>UTC(?:[+-]\d{1,2}(?::?\d{2})?)?)\) by (?P<device>AudioMoth [0-9A-Fa-f]+)"
)
_GAIN = re.compile(r"at (?:gain setting (?P<num>\d)|(?P<word>[a-z-]+) gain(?: setting)?)")
_BATTERY = re.compile(r"battery (?:state )?was (?P<less>less than )?(?P<volts>[\d.]+)\s?V")
_TEMPERATURE = re.compile(r"temperature was (?P<temp>-?[\d.]+)\s?C")


def _parse_tz(tz: str) -> dt.timezone:
    if tz == "UTC":
        return dt.timezone.utc
    match = re.fullmatch(r"UTC([+-])(\d{1,2}):?(\d{2})?", tz)
    sign = 1 if match.group(1) == "+" else -1
    offset = dt.timedelta(hours=int(match.group(2)), minutes=int(match.group(3) or 0))
    return dt.timezone(sign * offset)


def parse_audiomoth_comment(comment: str) -> dict:
    """Parse an AudioMoth comment sentence.

    Returns
    -------
    dict
        Keys present when found: ``recording_start_time`` (timezone-aware
        :class:`datetime.datetime`), ``device_id`` (e.g. ``"AudioMoth 0FE0..."``),
        ``gain_setting`` (int 0-4 or a word such as ``"medium"``),
        ``battery_state`` (volts, float), ``temperature_C`` (float).
        Empty if the text is not an AudioMoth comment.
    """
    if not comment:
        return {}
    match = _AUDIOMOTH.search(comment)
    if not match:
        return {}
    when = dt.datetime.strptime(f"{match['date']} {match['time']}", "%d/%m/%Y %H:%M:%S")
    out = {
        "recording_start_time": when.replace(tzinfo=_parse_tz(match["tz"])),
        "device_id": match["device"],
    }
    gain = _GAIN.search(comment)
    if gain:
        out["gain_setting"] = int(gain["num"]) if gain["num"] else gain["word"]
    battery = _BATTERY.search(comment)
    if battery:
        out["battery_state"] = float(battery["volts"])
    temperature = _TEMPERATURE.search(comment)
    if temperature:
        out["temperature_C"] = float(temperature["temp"])
    return out


#: Prefix of the JSON comment written by ``Audio.save(metadata_format="opso")``.
OPSO_METADATA_PREFIX = "opso_metadata"
_OPSO_METADATA_VERSIONS = ("v0.1",)


def _json_value(value):
    """JSON-friendly form of a metadata value (datetimes as ISO 8601 text)."""
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return str(value)


def generate_opso_metadata_str(metadata_dictionary: dict, version: str = "v0.1") -> str:
    """Encode a metadata dict as ``opso_metadata{...}`` text for a file's comment tag.

    Everything in the dict survives a save and reload (see
    :func:`parse_opso_metadata`): datetimes as ISO 8601 text, numbers as
    numbers. Two keys are added: ``opso_metadata_version`` and ``opso_nb_version``.

    Parameters
    ----------
    metadata_dictionary : dict
    version : str
        Layout version; only ``"v0.1"`` exists.
    """
    if version not in _OPSO_METADATA_VERSIONS:
        raise ValueError(f"version must be one of {_OPSO_METADATA_VERSIONS}, got {version!r}")
    blob = dict(metadata_dictionary)
    blob["opso_metadata_version"] = version
    blob["opso_nb_version"] = _package_version()
    return OPSO_METADATA_PREFIX + json.dumps(blob, default=_json_value)


def _package_version() -> str:
    try:
        return importlib.metadata.version("opso_nb")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def parse_opso_metadata(comment_string: str) -> dict:
    """Decode the ``opso_metadata{...}`` comment written by :func:`generate_opso_metadata_str`.

    ``recording_start_time`` comes back as a timezone-aware datetime.

    Raises
    ------
    ValueError
        If the text is not opso metadata, or its JSON is malformed.
    """
    if not isinstance(comment_string, str) or not comment_string.startswith(OPSO_METADATA_PREFIX):
        raise ValueError(f"not opso metadata: the text does not start with {OPSO_METADATA_PREFIX!r}")
    try:
        blob = json.loads(comment_string[len(OPSO_METADATA_PREFIX):])
    except json.JSONDecodeError as err:
        raise ValueError(f"malformed opso metadata JSON ({err})") from None
    if not isinstance(blob, dict):
        raise ValueError("malformed opso metadata: the JSON is not an object")
    start = blob.get("recording_start_time")
    if isinstance(start, str):
        try:
            blob["recording_start_time"] = dt.datetime.fromisoformat(start)
        except ValueError:
            pass
    return blob


def parse_audiomoth_metadata(metadata: dict) -> dict:
    """Add parsed AudioMoth fields to a raw metadata dict (as read by soundfile).

    Also unpacks an ``opso_metadata{...}`` comment (files written by
    ``Audio.save``): its keys are added and ``comment`` becomes the original
    comment again. The input is not changed.

    Returns
    -------
    dict
        ``metadata`` plus, when found, ``recording_start_time``, ``device_id``,
        ``gain_setting``, ``battery_state`` and ``temperature_C`` (see
        :func:`parse_audiomoth_comment`).
    """
    out = dict(metadata or {})
    comment = out.get("comment") or ""
    if isinstance(comment, str) and comment.startswith(OPSO_METADATA_PREFIX):
        try:
            blob = parse_opso_metadata(comment)
        except ValueError:
            blob = {}
        for key, value in blob.items():
            if key != "comment":
                out.setdefault(key, value)
        comment = blob.get("comment", "")
        out["comment"] = comment
    for key, value in parse_audiomoth_comment(comment if isinstance(comment, str) else "").items():
        out.setdefault(key, value)
    return out


def parse_audiomoth_metadata_from_path(file_path) -> dict:
    """Parsed metadata (see :func:`parse_audiomoth_metadata`) of a file; ``{}`` if unreadable."""
    return parse_audiomoth_metadata(load_metadata(file_path) or {})


def audiomoth_start_time(file, filename_timezone: str = "UTC", to_utc: bool = False) -> dt.datetime:
    """Recording start time from an AudioMoth file name.

    Understands ``20190616_053000.WAV`` (new firmware) and ``5D06C358.WAV``
    (old, hexadecimal Unix time).

    Parameters
    ----------
    file : str or Path
    filename_timezone : str
        Time zone the file name is written in ("UTC" or an IANA name).
    to_utc : bool
        Convert the result to UTC.
    """
    stem = Path(file).stem
    if re.fullmatch(r"\d{8}_\d{6}", stem):
        naive = dt.datetime.strptime(stem, "%Y%m%d_%H%M%S")
        tz = dt.timezone.utc if filename_timezone == "UTC" else ZoneInfo(filename_timezone)
        stamp = naive.replace(tzinfo=tz)
    elif re.fullmatch(r"[0-9A-Fa-f]{8}", stem):
        stamp = hex_to_time(stem)
    else:
        raise ValueError(f"{file}: file name is not an AudioMoth time stamp (YYYYMMDD_HHMMSS or 8 hex digits)")
    return stamp.astimezone(dt.timezone.utc) if to_utc else stamp
