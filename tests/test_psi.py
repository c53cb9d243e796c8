"""PSI buffer: scoring, threshold, replace-the-worst, decay, sampling, index consistency."""

from __future__ import annotations

import pytest
import torch

from intermimic_policy.sim.psi import PSIBuffer, PSIConfig

D = 4  # state size in these tests: [env, frame, clip, tag]
LENGTHS = torch.tensor([60, 200])


def buffer(num_envs: int = 2, **kw) -> PSIBuffer:
    cfg = PSIConfig(**{"horizon": 20, **kw})
    return PSIBuffer(LENGTHS, D, num_envs, cfg)


def run_episode(buf: PSIBuffer, env: int, clip: int, start: int, end: int, tag: float = 0.0,
                rewards: float | None = None) -> None:
    """Record frames start+1..end of one world (state = [env, frame, clip, tag])."""
    e, c = torch.tensor([env]), torch.tensor([clip])
    buf.begin_episode(e, c, torch.tensor([start]))
    for t in range(start + 1, end + 1):
        state = torch.tensor([[env, t, clip, tag]], dtype=torch.float32)
        buf.record(e, c, torch.tensor([t]), state, None if rewards is None else torch.tensor([rewards]))


def stored_frames(buf: PSIBuffer, clip: int, slot: int = 1) -> list[int]:
    return torch.nonzero(buf.scores[clip, :, slot] > 0).flatten().tolist()


def test_reference_slot_is_always_there():
    buf = buffer()
    assert buf.scores.shape == (2, 200, 3) and buf.states.shape == (2, 200, 2, D)
    assert buf.scores[0, :60, 0].eq(1).all() and buf.scores[0, 60:, 0].eq(0).all()
    assert buf.scores[:, :, 1:].eq(0).all() and buf.fill_fraction() == 0.0


def test_successful_episode_stores_its_inner_frames_with_full_score():
    buf = buffer()
    run_episode(buf, env=0, clip=0, start=0, end=59, tag=1.0)
    stored = buf.on_episode_end(torch.tensor([0]), torch.tensor([59]), torch.tensor([False]))
    assert stored_frames(buf, 0) == list(range(10, 49))  # margins of 10 at both ends
    assert stored == 39
    assert buf.scores[0, 10:49, 1].eq(1.0).all()
    assert buf.states[0, 25, 0].tolist() == [0.0, 25.0, 0.0, 1.0]


def test_threshold_keeps_only_states_the_policy_survived_from():
    buf = buffer(horizon=40)
    run_episode(buf, env=1, clip=1, start=0, end=40)
    buf.on_episode_end(torch.tensor([1]), torch.tensor([40]), torch.tensor([True]))
    # failed at 40: from t the policy survived (40 - t) of 40 frames; > 0.5 only for t < 20
    assert stored_frames(buf, 1) == list(range(10, 20))
    torch.testing.assert_close(buf.scores[1, 15, 1], torch.tensor(25 / 40))


def test_truncated_episode_scores_only_what_it_saw():
    buf = buffer(horizon=20)
    run_episode(buf, env=0, clip=1, start=0, end=50)
    buf.on_episode_end(torch.tensor([0]), torch.tensor([50]), torch.tensor([False]))  # cap, not failure
    # from t, surviving 20 more frames was observed only for t <= 30 (and t < 50 - 10)
    assert stored_frames(buf, 1) == list(range(10, 31))


def test_replace_the_worst_slot_and_decay():
    buf = buffer(horizon=40, decay=0.01)
    run_episode(buf, env=0, clip=1, start=0, end=100, tag=1.0)
    buf.on_episode_end(torch.tensor([0]), torch.tensor([100]), torch.tensor([True]))
    assert buf.scores[1, 30, 1] == 1.0 and buf.scores[1, 30, 2] == 0.0
    run_episode(buf, env=0, clip=1, start=0, end=100, tag=2.0)
    buf.on_episode_end(torch.tensor([0]), torch.tensor([100]), torch.tensor([True]))
    # the older entry decayed once; the new one went to the empty slot
    torch.testing.assert_close(buf.scores[1, 30, 1:], torch.tensor([0.99, 1.0]))
    assert buf.states[1, 30, :, 3].tolist() == [1.0, 2.0]
    run_episode(buf, env=0, clip=1, start=0, end=100, tag=3.0)
    buf.on_episode_end(torch.tensor([0]), torch.tensor([100]), torch.tensor([True]))
    # the worst (oldest, most decayed) is replaced by the newest
    torch.testing.assert_close(buf.scores[1, 30, 1:], torch.tensor([1.0, 0.99]))
    assert buf.states[1, 30, :, 3].tolist() == [3.0, 2.0]
    # failing at 58: from t = 30 it survived 28 of 40 frames (0.7), weaker than both stored
    # states, so they stay; from t = 12 it survived the full 40 (1.0) and replaces the worst
    run_episode(buf, env=0, clip=1, start=0, end=58, tag=4.0)
    buf.on_episode_end(torch.tensor([0]), torch.tensor([58]), torch.tensor([True]))
    assert buf.states[1, 30, :, 3].tolist() == [3.0, 2.0]
    assert buf.states[1, 12, :, 3].tolist() == [3.0, 4.0]
    before = buf.scores.clone()
    buf.on_episode_end(torch.tensor([1]), torch.tensor([0]), torch.tensor([True]))  # nothing recorded
    torch.testing.assert_close(buf.scores[:, :, 1:], before[:, :, 1:] * 0.99)
    torch.testing.assert_close(buf.scores[:, :, 0], before[:, :, 0])


def test_short_and_long_clip_envs_ending_together_keep_their_own_states():
    buf = buffer(num_envs=4, horizon=20)
    run_episode(buf, env=0, clip=0, start=5, end=59)  # short clip, to its end
    run_episode(buf, env=1, clip=1, start=40, end=130)  # long clip, failed
    run_episode(buf, env=2, clip=1, start=0, end=15)  # too short to store anything
    run_episode(buf, env=3, clip=0, start=0, end=45)  # short clip, failed, competes with env 0
    buf.on_episode_end(torch.tensor([3, 1, 2, 0]), torch.tensor([45, 130, 15, 59]),
                       torch.tensor([True, True, True, False]))
    for clip in (0, 1):
        for t in stored_frames(buf, clip):
            env, frame, c, _ = buf.states[clip, t, 0].tolist()
            assert (frame, c) == (t, clip)
            assert env in ({0, 3} if clip == 0 else {1})
    assert stored_frames(buf, 1) == list(range(50, 120))
    assert stored_frames(buf, 0) == list(range(10, 49))
    # where both short-clip envs offer a frame, the better score wins: env 0 reached the clip end
    assert buf.states[0, 30, 0, 0] == 0.0 and buf.scores[0, 30, 1] == 1.0
    # env 3 alone covers frame 10..14 (env 0 starts at 5: its margin ends at 15)
    assert buf.states[0, 12, 0, 0] == 3.0


def test_sampling_never_returns_an_empty_slot_and_fills_reference_rows():
    buf = buffer()
    run_episode(buf, env=0, clip=0, start=0, end=59, tag=7.0)
    buf.on_episode_end(torch.tensor([0]), torch.tensor([59]), torch.tensor([False]))
    g = torch.Generator().manual_seed(0)
    n = 2000
    clips = torch.zeros(n, dtype=torch.long)
    frames = torch.where(torch.arange(n) % 2 == 0, 30, 55)  # 30 has slot 1 filled, 55 has none
    ref = torch.full((n, D), -1.0)
    slots, states = buf.sample(clips, frames, g, reference=ref)
    assert set(slots.tolist()) <= {0, 1}
    assert slots[frames == 55].eq(0).all()
    share = slots[frames == 30].float().mean()
    assert 0.4 < share < 0.6  # slot 0 and slot 1 both score 1
    assert states[slots == 0].eq(-1.0).all()
    assert states[slots == 1, 3].eq(7.0).all() and states[slots == 1, 1].eq(30.0).all()
    # frames past the clip end are clamped to its last frame
    slots, _ = buf.sample(torch.tensor([0]), torch.tensor([500]), g)
    assert slots.tolist() == [0]


def test_sampling_weights_prefer_frames_without_good_states():
    buf = buffer(min_rollout=30)
    run_episode(buf, env=0, clip=0, start=0, end=59)
    buf.on_episode_end(torch.tensor([0]), torch.tensor([59]), torch.tensor([False]))
    w = buf.sampling_weights(torch.tensor([0, 1]))
    torch.testing.assert_close(w.sum(-1), torch.ones(2))
    assert w[0, 30:].eq(0).all() and w[1, 170:].eq(0).all()  # within min_rollout of the clip end
    torch.testing.assert_close(w[0, 5] / w[0, 20], torch.tensor(2.0))  # score sum 1 vs 2
    starts = buf.sample_start_frames(torch.zeros(500, dtype=torch.long), torch.Generator().manual_seed(1))
    assert starts.max() < 30


def test_reward_scoring_and_disabled_buffer():
    buf = buffer(score="reward", horizon=20)
    with pytest.raises(ValueError, match="rewards"):
        run_episode(buf, env=0, clip=0, start=0, end=59)
    # the episode's first state, recorded at its reset, has no reward yet: allowed
    buf.begin_episode(torch.tensor([1]), torch.tensor([0]), torch.tensor([3]))
    buf.record(torch.tensor([1]), torch.tensor([0]), torch.tensor([3]), torch.zeros(1, D))
    run_episode(buf, env=0, clip=0, start=0, end=59, rewards=0.8)
    buf.on_episode_end(torch.tensor([0]), torch.tensor([59]), torch.tensor([False]))
    torch.testing.assert_close(buf.scores[0, 20, 1], torch.tensor(0.8))
    off = buffer(slots=1)
    run_episode(off, env=0, clip=0, start=0, end=59)
    assert off.on_episode_end(torch.tensor([0]), torch.tensor([59]), torch.tensor([False])) == 0
    slots, _ = off.sample(torch.tensor([0, 1]), torch.tensor([10, 10]))
    assert slots.tolist() == [0, 0]


def test_record_refuses_a_world_without_an_episode_and_state_dict_round_trips():
    buf = buffer()
    with pytest.raises(ValueError, match="begin_episode"):
        buf.record(torch.tensor([1]), torch.tensor([0]), torch.tensor([3]), torch.zeros(1, D))
    run_episode(buf, env=0, clip=0, start=0, end=59, tag=5.0)
    buf.on_episode_end(torch.tensor([0]), torch.tensor([59]), torch.tensor([False]))
    other = buffer()
    other.load_state_dict(buf.state_dict())
    torch.testing.assert_close(other.states, buf.states)
    with pytest.raises(ValueError, match="different lengths|wrong shape"):
        PSIBuffer(torch.tensor([60, 201]), D, 2, PSIConfig()).load_state_dict(buf.state_dict())
