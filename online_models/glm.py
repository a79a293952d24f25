"""One prediction head of the global model: a generalised linear model on the
standardised feature vector, learned by Bayesian (Laplace) updates, one per version.

Why not plain SGD. A stochastic gradient step per label (River's
``LogisticRegression``) needs a learning rate; tuned on one stream it was too slow on
another, and it stayed 0.03 of AUC below a logistic regression fitted offline on the same
snapshot. Here the head carries its weights *and their precision* (the Hessian of the
loss so far, a ``(d+1) x (d+1)`` matrix). A new version solves, by a few Newton steps,

    minimise  1/2 (w - w0)' P0 (w - w0)  +  sum_i loss(w . z_i, y_i)

over the labels learned since the previous version: ``(w0, P0)`` summarise every older
label (a Gaussian prior), so the result is close to a batch fit on all the labels, with no
learning rate. ``P0`` is multiplied by :data:`FORGET` first, so the head keeps following a
changing population (it remembers about ``labels per version / (1 - FORGET)`` labels).
Labels of several instances are simply pooled: the merge sees all of them.

Two kinds: ``logistic`` (a probability: "purchases within H", "no event within H") and
``poisson`` (an expected count, log link: "how many purchases within H").

>>> import numpy as np
>>> head = Head.initial("p", "logistic", 2, prior=0.25)
>>> round(head.predict(np.zeros(2)), 2)
0.25
>>> rng = np.random.default_rng(0)
>>> z = rng.normal(size=(4000, 2))
>>> y = (rng.random(4000) < 1 / (1 + np.exp(-(2 * z[:, 0] - 1)))).astype(float)
>>> fitted = head.update(z, y)
>>> [round(float(v), 1) for v in fitted.weights], round(fitted.intercept, 1)
([1.9, 0.0], -1.0)
>>> Head.from_json(fitted.to_json()) == fitted
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

#: The prior precision of a new head's weights (features are standardised): a weak
#: ridge that keeps the first versions, fitted on few labels, near "no effect".
PRIOR_PRECISION: Final = 1.0
#: Each version multiplies the precision by this before adding its labels.
FORGET: Final = 0.98
NEWTON_STEPS: Final = 8
#: No weight (nor the intercept) of a ``poisson`` head moves by more than this in one
#: version, in the standardised space (a factor e per standard deviation of a feature).
#: A version's few labels can leave directions all but undetermined, and a spend head
#: (log link, heavy-tailed labels) then fitted them with weights in the hundreds,
#: predicting e^30 and more for users unlike those labels; a later version's Newton steps
#: on such predictions drifted to 1e16 (tests/unit/test_glm.py). A ``logistic`` head's
#: predictions are bounded, and it is not paced.
MAX_VERSION_STEP: Final = 1.0
#: The linear predictor is clipped here (a Poisson head's exp must not overflow).
MAX_ETA: Final = 30.0
KINDS: Final = ("logistic", "poisson")


def _newton_step(hessian: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """``hessian^-1 grad``; where the labels and the prior leave a direction undetermined
    (a singular system: every label's vector alike and the prior forgotten, as a stream
    whose users all look the same gives the calibration map after some 600 versions),
    the least-squares step of least norm, which moves the weights only along what the
    labels determine, and no step at all where nothing is finite.

    >>> _newton_step(np.array([[2.0, 0.0], [0.0, 4.0]]), np.array([2.0, 2.0])).tolist()
    [1.0, 0.5]
    >>> [round(float(v), 9) for v in _newton_step(np.ones((2, 2)), np.array([2.0, 2.0]))]
    [1.0, 1.0]
    """
    try:
        step: np.ndarray = np.linalg.solve(hessian, grad)
    except np.linalg.LinAlgError:
        if not (np.isfinite(hessian).all() and np.isfinite(grad).all()):
            return np.zeros_like(grad)
        step = np.linalg.lstsq(hessian, grad, rcond=None)[0]
    return step


def _objective(
    kind: str,
    theta: np.ndarray,
    prior_theta: np.ndarray,
    prior: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
) -> float:
    """The prior's quadratic plus the labels' negative log-likelihood."""
    eta = np.clip(x @ theta, -MAX_ETA, MAX_ETA)
    loss = np.logaddexp(0.0, eta) - y * eta if kind == "logistic" else np.exp(eta) - y * eta
    d = theta - prior_theta
    return float(0.5 * d @ prior @ d + loss.sum())


def _mean(kind: str, eta: np.ndarray) -> np.ndarray:
    eta = np.clip(eta, -MAX_ETA, MAX_ETA)
    if kind == "logistic":
        out: np.ndarray = 1.0 / (1.0 + np.exp(-eta))
        return out
    out = np.exp(eta)
    return out


@dataclass(frozen=True)
class Head:
    """Weights, intercept and precision of one head, in the standardised space of the
    model version it belongs to. ``precision`` is row-major, ``(d+1)^2`` numbers, the
    intercept last."""

    name: str
    kind: str
    weights: tuple[float, ...]
    intercept: float
    precision: tuple[float, ...]

    @classmethod
    def initial(cls, name: str, kind: str, d: int, *, prior: float) -> Head:
        """A head that predicts ``prior`` (a probability, or an expected count) for
        everyone, with the weak prior precision."""
        if kind not in KINDS:
            raise ValueError(f"unknown head kind {kind!r}; known: {', '.join(KINDS)}")
        intercept = math.log(prior / (1 - prior)) if kind == "logistic" else math.log(prior)
        p = np.eye(d + 1) * PRIOR_PRECISION
        p[d, d] = 1e-2  # the base rate is learned from the first labels
        return cls(name, kind, (0.0,) * d, intercept, tuple(p.ravel().tolist()))

    def predict(self, z: np.ndarray) -> float:
        """The prediction for one standardised vector."""
        eta = self.intercept + float(np.dot(self.weights, z))
        return float(_mean(self.kind, np.array([eta]))[0])

    def theta(self) -> np.ndarray:
        """Weights then intercept, one vector."""
        return np.array([*self.weights, self.intercept])

    def precision_matrix(self) -> np.ndarray:
        """The precision as a square matrix."""
        d = len(self.weights) + 1
        return np.array(self.precision).reshape(d, d)

    def restandardized(
        self,
        old_mean: np.ndarray,
        old_scale: np.ndarray,
        new_mean: np.ndarray,
        new_scale: np.ndarray,
    ) -> Head:
        """The same head in another scaler's space: the same raw vector keeps the same
        linear predictor, and the precision follows the change of variables."""
        d = len(self.weights)
        # theta' = T theta: w' = w s'/s, b' = b + sum(w (m' - m) / s).
        t = np.zeros((d + 1, d + 1))
        t[np.arange(d), np.arange(d)] = new_scale / old_scale
        t[d, :d] = (new_mean - old_mean) / old_scale
        t[d, d] = 1.0
        theta = t @ self.theta()
        t_inv = np.linalg.inv(t)
        precision = t_inv.T @ self.precision_matrix() @ t_inv
        return self._with(theta, precision)

    def update(
        self,
        z: np.ndarray,
        y: np.ndarray,
        *,
        forget: float = FORGET,
        held: np.ndarray | None = None,
    ) -> Head:
        """The head after the labels ``y`` of standardised vectors ``z`` (rows), the older
        labels' precision first multiplied by ``forget``. The weights ``held`` marks (one
        flag per feature) stay at 0 and the others are fitted given that (the prior's
        conditional), so a feature can stay in the vector and out of the head.

        >>> rng = np.random.default_rng(1)
        >>> z = rng.normal(size=(4000, 2))
        >>> z[:, 1] = z[:, 0] + 0.01 * rng.normal(size=4000)  # nearly collinear
        >>> y = (rng.random(4000) < 1 / (1 + np.exp(-z[:, 0]))).astype(float)
        >>> h = Head.initial("p", "logistic", 2, prior=0.5)
        >>> w = h.update(z, y, held=np.array([False, True])).weights
        >>> round(w[0], 1), w[1]
        (1.0, 0.0)
        """
        prior_theta = self.theta()
        prior = self.precision_matrix() * forget
        free = np.ones(len(prior_theta), dtype=bool)
        if held is not None:
            free[:-1] = ~held
        theta = start = np.where(free, prior_theta, 0.0)
        if len(y) == 0 and np.array_equal(theta, prior_theta):
            return self._with(prior_theta, prior)
        x = np.hstack([z, np.ones((len(z), 1))])
        f = np.flatnonzero(free)
        value = _objective(self.kind, theta, prior_theta, prior, x, y)
        for _ in range(NEWTON_STEPS):
            mu = _mean(self.kind, x @ theta)
            weight = mu * (1 - mu) if self.kind == "logistic" else mu
            grad = prior @ (theta - prior_theta) + x.T @ (mu - y)
            hessian = prior + (x * weight[:, None]).T @ x
            step = np.zeros_like(theta)
            step[f] = _newton_step(hessian[np.ix_(f, f)], grad[f])
            for _ in range(20):  # backtrack: a full Newton step can overshoot
                candidate = theta - step
                new_value = _objective(self.kind, candidate, prior_theta, prior, x, y)
                if new_value <= value:
                    break
                step = step / 2
            else:
                break
            theta, value = candidate, new_value
            if float(np.abs(step).max()) < 1e-6:
                break
        moved = float(np.abs(theta - start).max())
        if self.kind == "poisson" and moved > MAX_VERSION_STEP:  # the same way, so far
            theta = start + (theta - start) * (MAX_VERSION_STEP / moved)
        mu = _mean(self.kind, x @ theta)
        weight = mu * (1 - mu) if self.kind == "logistic" else mu
        hessian = prior + (x * weight[:, None]).T @ x
        return self._with(theta, hessian)

    def _with(self, theta: np.ndarray, precision: np.ndarray) -> Head:
        d = len(self.weights)
        return Head(
            self.name,
            self.kind,
            tuple(float(v) for v in theta[:d]),
            float(theta[d]),
            tuple(float(v) for v in precision.ravel()),
        )

    def to_json(self) -> dict[str, Any]:
        """Plain JSON."""
        return {
            "name": self.name,
            "kind": self.kind,
            "weights": list(self.weights),
            "intercept": self.intercept,
            "precision": list(self.precision),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Head:
        """Inverse of :meth:`to_json`; ValueError on a malformed head."""
        head = cls(
            str(data["name"]),
            str(data["kind"]),
            tuple(map(float, data["weights"])),
            float(data["intercept"]),
            tuple(map(float, data["precision"])),
        )
        if head.kind not in KINDS:
            raise ValueError(f"unknown head kind {head.kind!r}")
        if len(head.precision) != (len(head.weights) + 1) ** 2:
            raise ValueError(f"head {head.name}: precision is not (d+1)^2 numbers")
        return head
