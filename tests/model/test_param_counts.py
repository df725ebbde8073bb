"""The paper's presets have the backbone sizes the paper states (within 2 %; the
registry's reference_params)."""

import pytest

from mail_policy_node.model.backbones import build_backbone, count_parameters
from mail_policy_node.model.presets import REFERENCE_PARAMS, backbone_preset, preset_names


@pytest.mark.parametrize("name", preset_names())
def test_backbone_parameter_count(name):
    count = count_parameters(build_backbone(backbone_preset(name)))
    ref = REFERENCE_PARAMS[name.removesuffix("_stream")]
    assert abs(count / ref - 1) < 0.02, f"{name}: {count} parameters vs reference {ref:.0f}"


def test_mamba_presets_have_the_stated_depths():
    assert backbone_preset("ed_ma_ddpm").dec_mamba().d_conv == 2
    assert backbone_preset("ed_ma_ddpm").mamba().d_conv == 4
    bc = backbone_preset("ed_ma_bc")
    assert (bc.n_enc_layers, bc.n_layers, bc.d_state, bc.d_conv) == (8, 10, 8, 2)
    with pytest.raises(ValueError, match="unknown backbone preset 'd_tr_bc_stream'"):
        backbone_preset("d_tr_bc_stream")
