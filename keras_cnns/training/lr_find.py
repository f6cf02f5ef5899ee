"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural Networks"; the
"LR finder" of fastai): train from the initial weights for a few hundred steps while the learning rate grows
exponentially from tiny to huge, and watch the loss. It falls slowly at first, then fast, then blows up; a
good learning rate is where it falls fastest.

Each step's own loss (``train_on_batch`` with the metrics reset) is smoothed by an exponential moving average
(bias-corrected, as fastai does); the test stops when the smoothed loss exceeds ``DIVERGE`` times its best or
stops being finite. The suggestion is a tenth of the learning rate at the smoothed loss's minimum (fastai's
``lr_min``): the minimum lies near where training starts to diverge, and a tenth of it stays clear. On a convex
quadratic with curvature L (diverging above 2/L, best at 1/L) it suggests about 1/(2L). The learning rate of
the steepest fall is reported too: with the rate growing every step, the loss falls fastest where the progress
of all steps so far adds up, which on that quadratic is 100x below the best rate, so it is not the suggestion.
"""
import math

import numpy as np

SMOOTHING = 0.9
DIVERGE = 4.0


def schedule(min_lr, max_lr, steps):
    """The learning rate of each step: min_lr to max_lr, exponentially."""
    return min_lr * (max_lr / min_lr) ** (np.arange(steps) / max(steps - 1, 1))


def range_test(model, dataset, min_lr=1e-7, max_lr=10.0, steps=200, skip=5):
    """Run the test on a compiled ``model`` (its optimizer's learning rate is overwritten each step) with the
    batches of ``dataset`` (repeated as needed: (x, y) or (x, y, sample weight)). ``skip``: first steps the
    suggestion ignores (the average has seen too little). -> {"lr", "loss", "smoothed": lists, "suggested",
    "min_loss_lr", "stopped"}"""
    lrs, losses, smoothed = [], [], []
    average, best, stopped = 0.0, math.inf, f"ran all {steps} steps"
    batches = iter(dataset.repeat())
    for step, lr in enumerate(schedule(min_lr, max_lr, steps)):
        model.optimizer.learning_rate.assign(lr)
        x, y, *weight = next(batches)
        loss = float(model.train_on_batch(x, y, sample_weight=weight[0] if weight else None, reset_metrics=True,
                                          return_dict=True)["loss"])
        if not math.isfinite(loss):
            stopped = f"the loss stopped being finite at learning rate {lr:.3g}"
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        value = average / (1 - SMOOTHING ** (step + 1))
        lrs.append(float(lr))
        losses.append(loss)
        smoothed.append(value)
        if step > skip and value > DIVERGE * best:
            stopped = f"the loss passed {DIVERGE:g}x its best at learning rate {lr:.3g}"
            break
        best = min(best, value)
    return {"lr": lrs, "loss": losses, "smoothed": smoothed, "stopped": stopped, **suggest(lrs, smoothed, skip)}


def suggest(lrs, smoothed, skip=5):
    """{"suggested": a tenth of the learning rate at the smoothed loss's minimum, "min_loss_lr", "steepest_lr":
    the learning rate of the steepest fall before it} (None where the loss never fell)."""
    found = {"suggested": None, "min_loss_lr": None, "steepest_lr": None}
    if len(smoothed) < skip + 3:
        return found
    lowest = int(np.argmin(smoothed))
    found["min_loss_lr"] = lrs[lowest]
    if lowest <= skip + 1:  # the loss only grew: nothing fell
        return found
    slope = np.gradient(np.asarray(smoothed), np.log(lrs))
    found["steepest_lr"] = lrs[skip + int(np.argmin(slope[skip:lowest + 1]))]
    found["suggested"] = lrs[lowest] / 10
    return found
