"""opso_nb.taxa: 0.9's name conversions, offline, on BirdNET's label table."""

from pathlib import Path

import pytest

from opso_nb import taxa

PAGE = Path(__file__).resolve().parents[1] / "docs" / "differences" / "taxa.md"


@pytest.mark.parametrize("common", ["Wood Thrush", "wood-thrush", "WOODTHRUSH", " wood  thrush "])
def test_common_names_ignore_case_spaces_and_dashes(common):
    assert taxa.bn_common_to_sci(common) == "hylocichla-mustelina"
    assert taxa.common_to_sci(common) == "hylocichla-mustelina"


def test_scientific_to_common_and_back():
    assert taxa.sci_to_bn_common("erithacus-rubecula") == "europeanrobin"
    assert taxa.sci_to_bn_common("Erithacus rubecula") == "europeanrobin"
    species = taxa.get_species_list()
    assert len(species) == len(set(species)) == 6522
    assert all(taxa.bn_common_to_sci(taxa.sci_to_bn_common(s)) == s for s in species)


def test_unknown_names_raise_naming_them():
    with pytest.raises(KeyError, match="Snark"):
        taxa.bn_common_to_sci("Snark")
    with pytest.raises(KeyError, match="boojum-snarkus"):
        taxa.sci_to_bn_common("boojum-snarkus")


def test_xeno_canto_conversions_are_left_out_and_explained():
    page = PAGE.read_text(encoding="utf-8")
    for name in ("sci_to_xc_common", "xc_common_to_sci"):
        assert not hasattr(taxa, name) and name in page
