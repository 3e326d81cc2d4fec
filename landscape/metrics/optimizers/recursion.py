r"""The per-mode linear recursion of a first-order optimizer with frozen state, and its limit.

Every optimizer whose step is a fixed linear map of the gradient once its state is frozen
(SGD, heavy ball, Nesterov, Adam, AdamW, RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam,
SparseAdam, ASGD and the linear part of Adafactor, as ``torch.optim`` implements them) takes
the form

.. math::
    m' = \beta\, m + k\, g, \qquad
    \theta' = c_0\,\theta - s\, P^{-1}\big(A\, g + B\, m'\big),

with :math:`g = (H + W)\theta` the gradient of the quadratic :math:`L = \tfrac12\theta^\top H
\theta` (plus coupled weight decay :math:`W`), :math:`P` a positive diagonal (the frozen
preconditioner), :math:`s` the step size, :math:`c_0 = 1 - \delta` the decoupled decay factor
and four scalars :math:`(\beta, k, A, B)` that name the update rule:

* GD, RMSprop, Adagrad, Adadelta, Adafactor: :math:`(0, 1, 1, 0)`, coefficient 2;
* heavy ball with dampening :math:`d`: :math:`(\mu, 1-d, 0, 1)`, :math:`(2+2\mu)/(1-d)`;
* Nesterov: :math:`(\mu, 1, 1, \mu)`, :math:`(2+2\mu)/(1+2\mu)`;
* EMA momentum (Adam, Adamax, RAdam, SparseAdam): :math:`(\beta_1, 1-\beta_1, 0, 1)`,
  :math:`(2+2\beta_1)/(1-\beta_1)`;
* NAdam at step :math:`s`: :math:`(\beta_1, 1-\beta_1, A_s, B_s)`, from the Jury conditions.

Along an eigenvector of :math:`P^{-1}(H+W)` with eigenvalue :math:`a` (real: the matrix is
similar to the symmetric :math:`P^{-1/2}(H+W)P^{-1/2}`), with :math:`x = s a` and
:math:`y = s\,P^{-1} m`, the state :math:`(\theta, y)` follows the 2×2 transition matrix

.. math::
    M(x) = \begin{pmatrix} c_0 - x(A + Bk) & -B\beta \\ k x & \beta \end{pmatrix},
    \qquad \operatorname{tr} M = c_0 + \beta - x(A+Bk), \quad \det M = \beta(c_0 - A x).

The Jury (Schur–Cohn) conditions for a 2×2 matrix, :math:`|\det M| < 1` and
:math:`|\operatorname{tr} M| < 1 + \det M`, are linear in :math:`x`; for :math:`x > 0`,
:math:`0 \le \beta < 1`, :math:`0 < c_0 \le 1` they reduce to :math:`x < c` with

.. math::
    c = \min\left( \frac{(1+c_0)(1+\beta)}{A(1+\beta) + Bk},\
                   \frac{c_0 + 1/\beta}{A} \right)

(the second term only where :math:`A\beta > 0`). With :math:`c_0 = 1` this gives every
coefficient of the table (Cohen et al. 2021 for GD and momentum; Cohen et al. 2022,
"Adaptive Gradient Methods at the Edge of Stability", for Adam). The iteration is stable iff
:math:`s\,\lambda_{\max}(P^{-1}(H+W)) < c`. :meth:`ModeRecursion.spectral_radius` computes the
same limit numerically from the eigenvalues of :math:`M(x)`, as a check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from landscape.records import Record

__all__ = ["ModeRecursion"]


@dataclass(frozen=True)
class ModeRecursion(Record):
    r"""The update rule :math:`(\beta, k, A, B)` of a frozen-state optimizer (see module doc).

    Attributes
    ----------
    momentum : float
        :math:`\beta`, the decay of the momentum buffer (0: no momentum).
    gradient_input : float
        :math:`k`, the weight of the gradient entering the buffer (:math:`1-\beta_1` for an
        exponential moving average, :math:`1-d` with SGD's dampening).
    gradient_weight : float
        :math:`A`, the weight of the raw gradient in the step (Nesterov, NAdam, no momentum).
    momentum_weight : float
        :math:`B`, the weight of the updated buffer in the step.

    Examples
    --------
    >>> ModeRecursion().coefficient()                                    # gradient descent
    2.0
    >>> round(ModeRecursion(0.9, 0.1, 0.0, 1.0).coefficient(), 10)        # Adam, beta1 = 0.9
    38.0
    >>> round(ModeRecursion(0.9, 1.0, 1.0, 0.9).coefficient(), 10)        # Nesterov, 0.9
    1.3571428571
    """

    momentum: float = 0.0
    gradient_input: float = 1.0
    gradient_weight: float = 1.0
    momentum_weight: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"the momentum must be in [0, 1); got {self.momentum!r}.")
        if self.gradient_weight < 0 or self.momentum_weight < 0 or self.gradient_input < 0:
            raise ValueError(
                "the gradient weights of a recursion must be non-negative; got "
                f"A={self.gradient_weight!r}, B={self.momentum_weight!r}, "
                f"k={self.gradient_input!r}."
            )
        if self.effective_weight <= 0:
            raise ValueError("the recursion never moves the parameters (A + B k = 0).")

    @property
    def effective_weight(self) -> float:
        r""":math:`A + Bk`: the weight of the gradient in the step's immediate response."""
        return self.gradient_weight + self.momentum_weight * self.gradient_input

    def coefficient(self, decay: float = 0.0) -> float:
        r"""Return :math:`c`: the iteration is stable iff :math:`s\,a < c` on every mode.

        Parameters
        ----------
        decay : float, optional
            :math:`\delta = 1 - c_0`, the decoupled weight decay of one step
            (``lr * weight_decay`` for AdamW); in ``[0, 1)``.

        Returns
        -------
        float
            The coefficient (0 when ``decay >= 2``: the decay alone is unstable).
        """
        c0 = 1.0 - decay
        if c0 <= -1.0:
            return 0.0
        b, k = self.momentum, self.gradient_input
        A, B = self.gradient_weight, self.momentum_weight
        c = (1.0 + c0) * (1.0 + b) / (A * (1.0 + b) + B * k)
        if A > 0 and b > 0:
            c = min(c, (c0 + 1.0 / b) / A)
        return c

    def transition(self, x: float, decay: float = 0.0) -> np.ndarray:
        r"""Return the 2×2 transition matrix :math:`M(x)` of the state :math:`(\theta, y)`.

        Parameters
        ----------
        x : float
            :math:`s\,a`: step size times an eigenvalue of :math:`P^{-1}(H+W)`.
        decay : float, optional
            :math:`\delta = 1 - c_0`.

        Returns
        -------
        ndarray
            Shape ``(2, 2)``, float64.
        """
        b, k = self.momentum, self.gradient_input
        A, B = self.gradient_weight, self.momentum_weight
        c0 = 1.0 - decay
        return np.array([[c0 - x * (A + B * k), -B * b], [k * x, b]], dtype=np.float64)

    def spectral_radius(self, x: float, decay: float = 0.0) -> float:
        r"""Return the spectral radius of :meth:`transition` (growth per step of that mode).

        Returns
        -------
        float
            :math:`\max |\mathrm{eig}\, M(x)|`.
        """
        return float(np.abs(np.linalg.eigvals(self.transition(x, decay))).max())

    def numerical_coefficient(self, decay: float = 0.0, *, rtol: float = 1e-13) -> float:
        """Return the smallest ``x > 0`` with spectral radius 1, by bisection.

        A check of :meth:`coefficient` that uses no closed form.

        Returns
        -------
        float
            The limit found from the eigenvalues of :meth:`transition`.
        """
        hi = 1.0
        while self.spectral_radius(hi, decay) < 1.0:
            hi *= 2.0
            if hi > 1e12:
                return math.inf
        lo = 0.0
        while hi - lo > rtol * hi:
            mid = 0.5 * (lo + hi)
            if self.spectral_radius(mid, decay) < 1.0:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)
