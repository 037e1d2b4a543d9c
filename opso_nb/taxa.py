"""Convert between scientific and BirdNET common names of bird species.

OpenSoundscape 0.9's ``taxa`` module converted names through a species table
it downloaded. opso_nb never uses the network, so its table is the label list
of the BirdNET model that the ``birdnet`` extra installs (6,522 species,
``"Scientific name_Common name"``), read from disk.

Conventions, as documented for 0.9:

- a scientific name is lowercase and hyphenated: ``"hylocichla-mustelina"``;
- a common name is matched ignoring case, spaces and dashes, and returned
  lowercase with nothing between words: ``"woodthrush"``.

The xeno-canto conversions of 0.9 (``sci_to_xc_common``, ``xc_common_to_sci``)
are left out: no xeno-canto name table can ship with the package (see
``docs/differences/taxa.md``).

Raises
------
opso_nb.ml.birdnet_runtime.BirdNETUnavailable
    From every function when the ``birdnet`` extra is not installed.
"""

from __future__ import annotations

import functools
import re

from opso_nb.ml.birdnet_runtime import birdnet_labels

__all__ = ["bn_common_to_sci", "common_to_sci", "get_species_list", "sci_to_bn_common"]


def _squash(common: str) -> str:
    """Common name as lowercase letters and digits only ("Wood-Thrush " -> "woodthrush")."""
    return re.sub(r"[\s\-]+", "", str(common)).lower()


def _hyphenate(scientific: str) -> str:
    """Scientific name as lowercase-hyphenated ("Hylocichla mustelina" -> "hylocichla-mustelina")."""
    return "-".join(str(scientific).strip().lower().replace("-", " ").split())


@functools.lru_cache(maxsize=1)
def _tables() -> tuple[dict, dict]:
    """({squashed common name: hyphenated scientific}, {hyphenated scientific: squashed common})."""
    common_to_scientific, scientific_to_common = {}, {}
    for label in birdnet_labels():
        scientific, _, common = label.partition("_")
        sci, com = _hyphenate(scientific), _squash(common)
        common_to_scientific[com], scientific_to_common[sci] = sci, com  # both unique in BirdNET V2.4
    return common_to_scientific, scientific_to_common


def _look_up(table: int, key: str, unknown: str) -> str:
    """``_tables()[table][key]``, or a KeyError saying ``unknown``."""
    try:
        return _tables()[table][key]
    except KeyError:
        raise KeyError(unknown) from None


def get_species_list() -> list[str]:
    """Scientific names (lowercase-hyphenated) of every class in the table, in BirdNET's order.

    BirdNET's classes include a few that are not birds (frogs, insects,
    mammals, and sounds such as ``"engine"``).
    """
    return list(_tables()[1])


def bn_common_to_sci(common: str) -> str:
    """BirdNET common name (case, spaces and dashes ignored) -> lowercase-hyphenated scientific name.

    Raises
    ------
    KeyError
        Naming the common name, when the table does not have it.
    """
    return _look_up(0, _squash(common), f"{common!r} is not a BirdNET common name (compared as {_squash(common)!r})")


def common_to_sci(common: str) -> str:
    """Same as :func:`bn_common_to_sci` (0.9 documents both names for the BirdNET table)."""
    return bn_common_to_sci(common)


def sci_to_bn_common(scientific: str) -> str:
    """Scientific name (lowercase-hyphenated, or with spaces) -> BirdNET common name as lowercasenospaces.

    Raises
    ------
    KeyError
        Naming the scientific name, when the table does not have it.
    """
    return _look_up(1, _hyphenate(scientific), f"{scientific!r} is not a scientific name in BirdNET's table")
