"""Backbones: shapes for every variant / layout / head, causality, stacks' step and continuation paths
(ED-Ma aggregation included), streaming observe/act and whole-episode training against full forwards."""

import copy

import pytest
import torch

from mail_policy_node.model.backbones import BackboneConfig
from mail_policy_node.model.mamba import MambaConfig, MambaState
from mail_policy_node.model.stack import MambaStack

from .tiny import VARIANT_LAYOUTS, J, backbone_inputs, build, tiny_backbone

TOL = dict(atol=1e-5, rtol=1e-5)
ALL = [(v, lay, h) for v, lay in VARIANT_LAYOUTS for h in ("bc", "ddpm")]
STREAMING = [(v, h) for v in ("d_ma", "ed_ma") for h in ("bc", "ddpm")]


@pytest.mark.parametrize("variant, layout, head", ALL)
def test_shapes(variant, layout, head):
    cfg = tiny_backbone(variant, layout, head)
    out = build(cfg)(*backbone_inputs(cfg, batch=3))
    assert out.shape == (3, J, cfg.d_model)


@pytest.mark.parametrize("variant, layout, head", [a for a in ALL if a[2] == "ddpm"])
def test_action_slot_j_does_not_see_later_slots(variant, layout, head):
    """Causality through a whole backbone: changing noisy action j+1.. leaves outputs 0..j unchanged."""
    cfg = tiny_backbone(variant, layout, head)
    model = build(cfg)
    obs, act, time = backbone_inputs(cfg)
    act2 = act.clone()
    act2[:, 2:] = torch.randn_like(act2[:, 2:])
    with torch.no_grad():
        torch.testing.assert_close(model(obs, act, time)[:, :2], model(obs, act2, time)[:, :2], atol=1e-6, rtol=0)
        assert not torch.allclose(model(obs, act, time)[:, 2:], model(obs, act2, time)[:, 2:])


@pytest.mark.parametrize("variant", ["d_ma", "ed_ma", "d_tr"])
def test_observations_are_causal_in_streaming_and_decoder_only_layouts(variant):
    layout = "streaming" if variant != "d_tr" else "paper"
    cfg = tiny_backbone(variant, layout, "bc", goal=False)
    model = build(cfg)
    _obs, _, _ = backbone_inputs(cfg)
    stack = model.stack if variant != "ed_ma" else None
    with torch.no_grad():
        if stack is not None:  # token-level: output t unchanged when inputs after t change
            x = torch.randn(2, 8, cfg.d_model)
            x2 = x.clone()
            x2[:, 4:] += 1.0
            fn = stack if variant == "d_ma" else stack.forward
            torch.testing.assert_close(fn(x)[:, :4], fn(x2)[:, :4], atol=1e-6, rtol=0)
        else:  # ED-Ma: encoder -> aggregated decoder, position by position
            enc, dec = torch.randn(2, 8, cfg.d_model), torch.randn(2, 8, cfg.d_model)
            enc2 = enc.clone()
            enc2[:, 4:] += 1.0
            out = model.decoder(dec, add=model.encoder(enc))
            out2 = model.decoder(dec, add=model.encoder(enc2))
            torch.testing.assert_close(out[:, :4], out2[:, :4], atol=1e-6, rtol=0)


@pytest.mark.parametrize("aggregate", [False, True])
def test_stack_step_and_continuation_match_full(aggregate):
    stack = MambaStack(MambaConfig(d_model=16, d_state=8, d_conv=2), 3).eval()
    x = torch.randn(2, 9, 16)
    add = torch.randn(2, 9, 16) if aggregate else None
    with torch.no_grad():
        full = stack(x, add=add)
        state = stack.allocate_inference_cache(2)
        ys = []
        for t in range(9):
            y, state = stack.step(x[:, t], state, None if add is None else add[:, t])
            ys.append(y)
        torch.testing.assert_close(torch.stack(ys, 1), full, **TOL)
        ya, sa = stack.forward_with_state(x[:, :4], add=None if add is None else add[:, :4])
        yb = stack(x[:, 4:], sa, add=None if add is None else add[:, 4:])
        torch.testing.assert_close(torch.cat([ya, yb], 1), full, **TOL)



def test_stack_forward_returns_a_tensor_and_forward_with_state_a_tuple():
    """As for Mamba: forward -> tensor, forward_with_state -> (tensor, one MambaState per layer), with or
    without a state in; ``add`` is keyword-only, so a call in the former (x, state, return_state) form fails."""
    stack = MambaStack(MambaConfig(d_model=16, d_state=8, d_conv=2), 3).eval()
    x, add = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    with torch.no_grad():
        for state in (None, stack.allocate_inference_cache(2)):
            y = stack(x, state, add=add)
            assert type(y) is torch.Tensor and y.shape == x.shape
            out = stack.forward_with_state(x, state, add=add)
            assert type(out) is tuple and len(out) == 2 and torch.equal(out[0], y)
            assert type(out[1]) is tuple and len(out[1]) == 3 and all(isinstance(s, MambaState) for s in out[1])
        with pytest.raises(TypeError):
            stack(x, None, True)


def test_ed_mamba_stepwise_with_aggregation_matches_full():
    """Encoder and decoder advanced token by token (each with its own cache) == the full ED-Ma pass."""
    cfg = tiny_backbone("ed_ma", "paper", "ddpm")
    model = build(cfg)
    enc, dec = torch.randn(2, 7, cfg.d_model), torch.randn(2, 7, cfg.d_model)
    with torch.no_grad():
        full = model.decoder(dec, add=model.encoder(enc))
        se, sd = model.encoder.allocate_inference_cache(2), model.decoder.allocate_inference_cache(2)
        outs = []
        for t in range(7):
            e, se = model.encoder.step(enc[:, t], se)
            o, sd = model.decoder.step(dec[:, t], sd, add=e)
            outs.append(o)
    torch.testing.assert_close(torch.stack(outs, 1), full, **TOL)


@pytest.mark.parametrize("scan", ["sequential", "parallel"])
@pytest.mark.parametrize("variant, head", STREAMING)
def test_streaming_observe_act_equals_full_forward(variant, head, scan):
    cfg = tiny_backbone(variant, "streaming", head)
    model = build(cfg)
    model.set_runtime(scan_impl=scan)
    obs, act, time = backbone_inputs(cfg)
    with torch.no_grad():
        full = model(obs, act, time)
        state = model.init_state(2)
        for start in range(0, obs.shape[1], 2):  # the engine advances a few tokens at a time
            state = model.observe(obs[:, start:start + 2], state)
        saved = copy.deepcopy(state)
        out = model.act(state, act, time)
        again = model.act(state, act, time)  # every denoising step runs from the same prefix
    torch.testing.assert_close(out, full, **TOL)
    assert torch.equal(out, again)
    for s_stack, saved_stack in zip(state.stacks, saved.stacks):
        for s, s0 in zip(s_stack, saved_stack):
            assert torch.equal(s.ssm, s0.ssm) and torch.equal(s.conv, s0.conv)  # act never mutates


@pytest.mark.parametrize("scan", ["sequential", "parallel"])
@pytest.mark.parametrize("variant, head", STREAMING)
def test_whole_episode_training_equals_per_step_forward(variant, head, scan):
    """forward_episode (trunk + branches) == the streaming forward on the prefix up to each step."""
    cfg = tiny_backbone(variant, "streaming", head)
    model = build(cfg)
    model.set_runtime(scan_impl=scan)
    steps, p = 5, cfg.obs_tokens_per_step
    obs = torch.randn(2, 1 + steps * p, cfg.d_model)  # goal + 5 steps of 2 tokens
    at = torch.arange(steps) * p + p  # last token of each step (goal at index 0)
    act = torch.randn(2, steps, J, cfg.d_model) if head == "ddpm" else None
    time = torch.randn(2, steps, cfg.d_model) if head == "ddpm" else None
    with torch.no_grad():
        out = model.forward_episode(obs, at, act, time)
        for k in range(steps):
            ref = model(obs[:, :int(at[k]) + 1], None if act is None else act[:, k],
                        None if time is None else time[:, k])
            torch.testing.assert_close(out[:, k], ref, **TOL)


def test_layout_and_config_validation_name_the_bad_value():
    with pytest.raises(ValueError, match="'streaming' exists for d_ma and ed_ma only, got variant 'd_tr'"):
        BackboneConfig(variant="d_tr", layout="streaming")
    with pytest.raises(ValueError, match="variant must be one of .* got 'x_ma'"):
        BackboneConfig(variant="x_ma")
    with pytest.raises(ValueError, match="needs n_enc_layers >= 1, got 0"):
        BackboneConfig(variant="ed_ma")
    with pytest.raises(ValueError, match="observe/act need layout 'streaming'"):
        build(tiny_backbone("d_ma", "paper", "bc")).init_state(1)
    with pytest.raises(ValueError, match="expected 7 observation tokens"):
        cfg = tiny_backbone("d_ma", "paper", "bc")
        build(cfg)(torch.randn(1, 3, cfg.d_model))
