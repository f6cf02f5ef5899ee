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


def test_the_defaults_of_each_schedule_are_the_notes(tmp_path):
    """Every value hand-computed from the formulas of the module's doc, with the defaults: gamma 0.1 every third of
    the run after the warm-up; k = 0.1 a epoch; SGDR's first period a third of the run, then twice as long, the
    same peak, down to min_lr."""
    # step: 12 epochs, 3 of warm-up: 9 to decay, a step every 3 (counted after the warm-up)
    s = build_schedule("step", 0.1, SPE, 12, warmup_epochs=3)
    assert [round(lr_at(s, e), 6) for e in (3, 5.9, 6, 9, 11.9)] == [0.1, 0.1, 0.01, 0.001, 0.001]
    s = build_schedule("step", 0.1, SPE, 9)  # a staircase: flat between steps
    assert lr_at(s, 1.5) == pytest.approx(0.1) and lr_at(s, 3) == pytest.approx(0.01)
    # exponential, k = 0.1: a0 e^-0.1 after one epoch, e^-0.5 after five
    s = build_schedule("exponential", 0.1, SPE, 10)
    assert lr_at(s, 1) == pytest.approx(0.1 * math.exp(-0.1)) and lr_at(s, 5) == pytest.approx(0.1 * math.exp(-0.5))
    # SGDR over 9 epochs: cycles of 3 and 6 epochs, each from 0.1 to 0.01 (halfway: 0.01 + 0.09 / 2 = 0.055)
    s = build_schedule("sgdr", 0.1, SPE, 9, min_lr=0.01)
    assert [round(lr_at(s, e), 6) for e in (0, 1.5, 3, 6, 9)] == [0.1, 0.055, 0.1, 0.055, 0.1]
    assert lr_at(s, 2.9) == pytest.approx(0.01 + 0.09 * (1 + math.cos(math.pi * 29 / 30)) / 2)
    # names as a flag or a Python keyword may write them
    assert lr_at(build_schedule("Inverse_Time", 0.1, SPE, 10), 1) == pytest.approx(0.1 / 1.1)
    with pytest.raises(CnnkitError) as unknown:
        build_schedule("linear", 0.1, SPE, 10)
    assert str(unknown.value) == ("unknown schedule 'linear'; choose from constant, step, exponential, inverse-time, "
                                  "cosine, sgdr, plateau")


def test_cycle_ends_default_to_equal_cycles_and_stop_at_the_last_whole_one():
    assert cycle_end_epochs(9, 3) == [2, 5, 8]  # t_mul 1: equal cycles, the last ending with the run
    assert cycle_end_epochs(8, 3) == [2, 5]  # a cycle one epoch past the run is not a cycle
    assert cycle_end_epochs(9, 3, t_mul=2.0) == [2, 8]  # 3 then 6 epochs
    assert cycle_end_epochs(10, 3, warmup_epochs=1) == [3, 6, 9]


def test_learning_rate_at_reads_the_rate_of_the_last_step():
    import tensorflow as tf

    from keras_cnns.training.schedules import learning_rate_at

    # Keras' optimizers keep the rate of their last step in a variable: 31 real steps, the last was step 30,
    # the first of the second stair (step 0.1 -> 0.01 every 3 epochs of 10 steps)
    optimizer = keras.optimizers.SGD(learning_rate=build_schedule("step", 0.1, SPE, 9))
    weight = tf.Variable(1.0)
    for step in range(31):
        optimizer.apply_gradients([(tf.constant(1.0), weight)])
        if step == 29:
            assert learning_rate_at(optimizer) == pytest.approx(0.1)
    assert learning_rate_at(optimizer) == pytest.approx(0.01) and isinstance(learning_rate_at(optimizer), float)
    # the legacy optimizers hold the schedule itself: read at the last step (the first, before any)
    legacy = keras.optimizers.legacy.SGD(learning_rate=build_schedule("step", 0.1, SPE, 9))
    assert learning_rate_at(legacy) == pytest.approx(0.1)
    legacy.iterations.assign(31)
    assert learning_rate_at(legacy) == pytest.approx(0.01)
    legacy.iterations.assign(30)
    assert learning_rate_at(legacy) == pytest.approx(0.1)
    assert learning_rate_at(keras.optimizers.SGD(learning_rate=0.05)) == pytest.approx(0.05)
