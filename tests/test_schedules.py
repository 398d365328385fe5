"""Learning-rate schedules end at the phase's budget; EMA weights are measured, raw ones trained."""

import keras
import numpy as np
import pytest

from tinymatch import ema, schedules


def _rates(schedule, steps):
    return np.array([float(schedule(step)) for step in steps])


def test_linear_decays_to_zero_exactly_at_the_budget():
    schedule = schedules.learning_rate_schedule("linear", 1e-2, 1000)
    warmup = schedules.warmup_steps(1000)
    assert warmup == 50
    rates = _rates(schedule, [0, warmup // 2, warmup, 500, 999, 1000, 1200])
    assert rates[0] == pytest.approx(1e-3)  # warm-up starts at a tenth of the peak
    assert rates[1] == pytest.approx(1e-3 + 0.5 * 9e-3, rel=1e-5)
    assert rates[2] == pytest.approx(1e-2)
    assert rates[3] == pytest.approx(1e-2 * (1000 - 500) / 950, rel=1e-5)
    assert rates[4] == pytest.approx(1e-2 / 950, rel=1e-4)
    assert rates[5] == 0.0 and rates[6] == 0.0
    assert np.all(np.diff(_rates(schedule, range(warmup, 1001))) <= 0)


def test_one_cycle_ramps_over_30_percent_then_falls_to_zero():
    schedule = schedules.learning_rate_schedule("onecycle", 4e-3, 100)
    rates = _rates(schedule, range(0, 101))
    assert rates[0] == pytest.approx(4e-3 / 25)
    assert int(np.argmax(rates)) == 30 and rates.max() == pytest.approx(4e-3)
    assert rates[100] == 0.0
    assert np.all(np.diff(rates[:31]) > 0) and np.all(np.diff(rates[30:]) < 0)


def test_cosine_and_constant_are_the_original_schedules():
    cosine = schedules.learning_rate_schedule("cosine", 1e-3, 100)
    assert isinstance(cosine, keras.optimizers.schedules.CosineDecay)
    assert float(cosine(0)) == pytest.approx(1e-4) and float(cosine(5)) == pytest.approx(1e-3)
    assert float(cosine(100)) == pytest.approx(1e-5, rel=1e-3)  # floor: 1% of the peak
    assert schedules.learning_rate_schedule("constant", 3e-4, 100) == 3e-4
    with pytest.raises(ValueError, match="lr_schedule"):
        schedules.learning_rate_schedule("step", 1e-3, 100)


def test_an_optimizer_with_the_linear_schedule_serialises():
    optimizer = keras.optimizers.Adam(schedules.learning_rate_schedule("linear", 2e-3, 300))
    config = keras.optimizers.serialize(optimizer)["config"]["learning_rate"]
    schedule = keras.saving.deserialize_keras_object(config)
    assert isinstance(schedule, schedules.LinearBudgetSchedule)
    assert schedule.get_config() == dict(peak=2e-3, total_steps=300, ramp_steps=15, start=2e-4)


def _fitted_model(use_ema):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    options = dict(use_ema=True, ema_momentum=0.9) if use_ema else {}
    model.compile(optimizer=keras.optimizers.Adam(0.05, **options), loss="mse")
    ema.keep_raw_weights_after_fit(model.optimizer)
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    model.fit(x, x.sum(axis=1, keepdims=True), epochs=3, batch_size=8, verbose=0)
    return model


def test_averaged_weights_swap_in_the_averages_and_back():
    model = _fitted_model(use_ema=True)
    raw = [w.copy() for w in model.get_weights()]
    averages = [v.numpy() for v in model.optimizer._model_variables_moving_average]
    assert not all(np.allclose(a, r) for a, r in zip(averages, raw))  # fit left the raw weights
    with ema.averaged_weights(model.optimizer):
        for weight, average in zip(model.get_weights(), averages):
            np.testing.assert_array_equal(weight, average)
    for weight, before in zip(model.get_weights(), raw):
        np.testing.assert_array_equal(weight, before)


def test_averaged_weights_without_ema_change_nothing():
    model = _fitted_model(use_ema=False)
    raw = [w.copy() for w in model.get_weights()]
    with ema.averaged_weights(model.optimizer):
        for weight, before in zip(model.get_weights(), raw):
            np.testing.assert_array_equal(weight, before)
