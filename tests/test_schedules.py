"""Every learning-rate schedule checked against its defining formula, in epochs."""
import math

import numpy as np
import pytest
import tf_keras as keras

from keras_cnns.errors import CnnkitError
from keras_cnns.training.schedules import LinearWarmup, build_schedule, cycle_end_epochs

SPE = 10  # steps per epoch


def lr_at(schedule, epoch):
    if isinstance(schedule, float):
        return schedule
    return float(schedule(int(round(epoch * SPE))))


def test_constant_is_a_plain_float_so_plateau_can_lower_it():
    assert build_schedule("constant", 0.1, SPE, 10) == 0.1
    assert build_schedule("plateau", 0.1, SPE, 10) == 0.1


def test_step_decay_multiplies_by_gamma_every_step_epochs():
    s = build_schedule("step", 0.1, SPE, 30, step_epochs=10, gamma=0.1)
    assert lr_at(s, 0) == pytest.approx(0.1)
    assert lr_at(s, 9.9) == pytest.approx(0.1)
    assert lr_at(s, 10) == pytest.approx(0.01)
    assert lr_at(s, 25) == pytest.approx(0.001)


@pytest.mark.parametrize("t", [0, 0.5, 1, 3, 7.3])
def test_exponential_decay_is_a0_e_minus_kt(t):
    s = build_schedule("exponential", 0.2, SPE, 10, decay=0.3)
    assert lr_at(s, t) == pytest.approx(0.2 * math.exp(-0.3 * t), rel=1e-5)


@pytest.mark.parametrize("t", [0, 1, 2.5, 9])
def test_inverse_time_decay_is_a0_over_1_plus_kt(t):
    s = build_schedule("inverse-time", 0.2, SPE, 10, decay=0.5)
    assert lr_at(s, t) == pytest.approx(0.2 / (1 + 0.5 * t), rel=1e-5)


def test_cosine_goes_from_a0_through_half_to_the_floor():
    s = build_schedule("cosine", 0.1, SPE, 20, min_lr=0.001)
    assert lr_at(s, 0) == pytest.approx(0.1)
    assert lr_at(s, 10) == pytest.approx(0.001 + (0.1 - 0.001) / 2, rel=1e-4)
    assert lr_at(s, 20) == pytest.approx(0.001, rel=1e-4)


def test_sgdr_restarts_to_the_peak_and_cycles_grow_by_t_mul():
    s = build_schedule("sgdr", 0.1, SPE, 14, restart_epochs=2, t_mul=2.0, m_mul=1.0)
    assert lr_at(s, 0) == pytest.approx(0.1)
    assert lr_at(s, 1.9) < 0.01  # near the end of the first 2-epoch cycle
    assert lr_at(s, 2) == pytest.approx(0.1)  # restart
    assert lr_at(s, 4) == pytest.approx(0.05, rel=1e-4)  # middle of the 4-epoch second cycle
    assert lr_at(s, 6) == pytest.approx(0.1)  # third cycle starts after 2 + 4 epochs
    assert cycle_end_epochs(14, 2, 2.0) == [1, 5, 13]


def test_linear_warmup_ramps_then_hands_over_to_the_schedule():
    s = build_schedule("exponential", 0.1, SPE, 10, warmup_epochs=2, decay=0.5)
    assert isinstance(s, LinearWarmup)
    assert lr_at(s, 0) == pytest.approx(0.1 / 20)  # first of 20 warm-up steps
    assert lr_at(s, 1) == pytest.approx(0.1 * 11 / 20)
    assert lr_at(s, 2) == pytest.approx(0.1)  # the decay starts at its own step 0
    assert lr_at(s, 4) == pytest.approx(0.1 * math.exp(-0.5 * 2), rel=1e-5)
    ramp = [lr_at(s, e / SPE) for e in range(20)]
    assert np.all(np.diff(ramp) > 0)


def test_warmup_in_front_of_a_constant_rate_and_serialization_round_trip():
    s = build_schedule("constant", 0.05, SPE, 5, warmup_epochs=1)
    assert lr_at(s, 0.5) == pytest.approx(0.05 * 6 / 10)
    assert lr_at(s, 3) == pytest.approx(0.05)
    nested = build_schedule("cosine", 0.1, SPE, 10, warmup_epochs=1)
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(nested))
    for step in (0, 5, 10, 50, 99):
        assert float(again(step)) == pytest.approx(float(nested(step)))


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "linear"}, "unknown schedule"),
    ({"name": "cosine", "lr": 0}, "must be positive"),
    ({"name": "cosine", "warmup_epochs": 10}, "warm-up must be shorter"),
])
def test_bad_schedule_settings_are_clear_errors(kwargs, message):
    args = {"name": "cosine", "lr": 0.1, "steps_per_epoch": SPE, "epochs": 10, **kwargs}
    with pytest.raises(CnnkitError, match=message):
        build_schedule(**args)
