"""What a person sees while a run trains: how long each epoch took and about how long is left, and the first line
saying what is trained on what (keras_cnns/training/callbacks.py, trainer._start_line)."""
import logging

import pytest

from keras_cnns.training import callbacks


@pytest.mark.parametrize("seconds, text", [(0.4, "0 s"), (59.4, "59 s"), (59.6, "1 min 00 s"), (185, "3 min 05 s"),
                                           (3599, "59 min 59 s"), (3600, "1 h 00 min"), (3725, "1 h 02 min")])
def test_durations_read_as_a_person_says_them(seconds, text):
    assert callbacks.duration(seconds) == text


def test_time_left_leaves_the_first_epoch_out_of_the_estimate_and_says_why_it_was_slow(monkeypatch, caplog):
    clock = iter([0.0, 17.0, 17.0, 20.0, 20.0, 22.0, 22.0, 24.0])  # epochs of 17, 3, 2 and 2 s
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: next(clock))
    log = logging.getLogger("test.time_left")
    progress = callbacks.TimeLeft(4, log)
    with caplog.at_level(logging.INFO, logger="test.time_left"):
        for epoch in range(4):
            progress.on_epoch_begin(epoch)
            progress.on_epoch_end(epoch)
    # after the first: 3 epochs left at 17 s (the only one there is); then the epochs after the first:
    # 3 s -> 2 left x 3 s; (3 + 2) / 2 = 2.5 s -> 1 left; none left
    assert [r.getMessage() for r in caplog.records] == [
        "epoch 1/4: 17 s (the first also builds and compiles the training graph); about 51 s left",
        "epoch 2/4: 3 s; about 6 s left", "epoch 3/4: 2 s; about 2 s left", "epoch 4/4: 2 s"]


def test_the_first_line_says_the_model_its_size_the_data_and_the_run(tmp_path):
    import dataclasses

    import keras_cnns
    from keras_cnns.data import load_data
    from keras_cnns.training import TrainConfig
    from keras_cnns.training.trainer import _start_line

    data = load_data("digits", (32, 32, 1))
    model = keras_cnns.create_model("lenet5", num_classes=10)
    config = TrainConfig(model="LeNet-5", epochs=3)
    assert _start_line(config, data, model, 40) == (
        f"training lenet5 (the zoo's name for 'LeNet-5'), 0.06M trainable parameters, at 32x32x1 on digits: "
        f"{len(data.train):,} training images, 40 steps an epoch, 3 epochs")
    assert _start_line(dataclasses.replace(config, model="lenet5"), data, model, 40).startswith("training lenet5, ")
