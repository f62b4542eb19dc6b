"""NeuralUCB contextual bandit over fixed arm embeddings.

Zhou, Li & Gu, "Neural Contextual Bandits with UCB-based Exploration", ICML 2020
(arXiv:1911.04462). Each arm is a context vector x; the score of an arm is

    U(x) = f(x; θ) + nu * sqrt(lam * g(x)ᵀ Z⁻¹ g(x)),   g(x) = ∇θ f(x; θ) / sqrt(hidden),

with f a one-hidden-layer ReLU network and Z = lam·I + Σ g gᵀ over the pulled arms.
Plain torch, CPU, and no use of the global RNG: the same seed gives the same choices.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

# Above this many parameters Z defaults to its diagonal: full Z keeps every pulled gradient
# (N × p floats) and each select() costs O(N²·p), which gets heavy for wide nets and long runs.
DIAGONAL_ABOVE = 2_000
_PATIENCE, _REL_TOL = 20, 1e-4  # early stop: less than 0.01 % better than 20 steps ago


class NeuralUCB:
    def __init__(
        self,
        dim: int,
        hidden: int = 100,
        nu: float = 1.0,
        lam: float = 1.0,
        seed: int = 0,
        lr: float = 1e-2,
        fit_steps: int = 200,
        diagonal: bool | None = None,
    ):
        if dim < 1 or hidden < 1:
            raise ValueError(f"dim and hidden must be positive, got dim={dim}, hidden={hidden}")
        if lam <= 0 or nu < 0:
            raise ValueError(f"need lam > 0 and nu >= 0, got lam={lam}, nu={nu}")
        self.dim, self.hidden, self.nu, self.lam = dim, hidden, nu, lam
        self.lr, self.fit_steps = lr, fit_steps
        gen = torch.Generator().manual_seed(seed)
        # The paper's symmetric init: hidden units come in identical pairs with opposite output
        # weights, so f(x; θ0) = 0 everywhere. A random non-zero f at init, with a spread larger
        # than the rewards', would bury some arms under a prior the bonus cannot overcome.
        # Contexts are unit-norm, so N(0, 1) rows give N(0, 1) pre-activations whatever dim is.
        half = hidden // 2
        w1 = torch.randn(hidden - half, dim, generator=gen)
        v = torch.randn(half, generator=gen) * math.sqrt(2.0 / hidden)
        self.params = [
            torch.cat([w1, w1[:half]]),
            torch.zeros(hidden),
            torch.cat([v, torch.zeros(hidden - 2 * half), -v]),  # an odd unit out gets output weight 0
            torch.zeros(()),
        ]
        for p in self.params:
            p.requires_grad_(True)
        self.theta0 = [p.detach().clone() for p in self.params]
        # One optimiser for the bandit's lifetime: each re-fit warm-starts from the last one, and
        # Adam's moment estimates keep the first steps of a re-fit from jolting a fitted network.
        self._opt = torch.optim.Adam(self.params, lr=lr)
        n_params = hidden * (dim + 2) + 1
        self.diagonal = n_params > DIAGONAL_ABOVE if diagonal is None else bool(diagonal)
        self.seed = seed
        # Diagonal: keep diag(Z). It forgets that one pull covers a whole direction, and each g_i²
        # is a tiny share of ‖g‖², so its bonus shrinks slowly unless lam is small (~0.01).
        # Full: Z = lam·I + Hᵀ H is never formed; we keep the pulled gradients H [N, p] and solve
        # through Woodbury with the N×N matrix lam·I + H Hᵀ: exact, no p×p memory, cheap while N
        # is small. float64 because a well-explored arm's bonus is a small difference of big terms.
        self._z_diag = torch.full((n_params,), float(lam)) if self.diagonal else None
        self._h = torch.empty(0, n_params, dtype=torch.float64)
        self._x = torch.empty(0, dim)
        self._r = torch.empty(0)
        self._w = torch.empty(0)  # weight of each past pull in the fit: 1, times gamma per discount

    # -- public API -------------------------------------------------------------------------------

    def select(self, contexts: torch.Tensor, k: int = 1) -> list[int]:
        """Indices of k distinct arms (k capped at the number of rows), best UCB first."""
        x = self._check_contexts(contexts)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if len(x) == 0:
            raise ValueError("select() needs at least one arm")
        mean, g = self._mean_and_grad(x)
        # Batch selection with "hallucinated" pulls: after choosing an arm, pretend it was pulled
        # (Z += g gᵀ on a temporary copy) so arms similar to it lose bonus and the batch diversifies.
        # The mean is unchanged: no reward has been seen yet.
        if self.diagonal:
            z = self._z_diag.clone()
            quad = (g * g / z).sum(1)
        else:
            g = g.double()
            zg = self._z_solve(g)
            quad = (g * zg).sum(1)
        chosen: list[int] = []
        for _ in range(min(k, len(x))):
            ucb = mean.double() + self.nu * (self.lam * quad.clamp_min(0)).sqrt()
            ucb[chosen] = -math.inf
            j = int(torch.argmax(ucb))
            chosen.append(j)
            if self.diagonal:
                z += g[j] * g[j]
                quad = (g * g / z).sum(1)
            else:
                # Sherman–Morrison on the temporary Z⁻¹, applied to the rows we need only:
                # (Z + g_j g_jᵀ)⁻¹ g_i = Z⁻¹ g_i − Z⁻¹ g_j · (g_jᵀ Z⁻¹ g_i) / (1 + g_jᵀ Z⁻¹ g_j).
                c = g @ zg[j]
                denom = 1.0 + c[j]
                zg = zg - torch.outer(c, zg[j]) / denom
                quad = quad - c * c / denom
        return chosen

    def update(self, contexts: torch.Tensor, rewards: torch.Tensor) -> None:
        """Record pulled arms and their rewards, grow Z, then re-fit f on the whole history."""
        x = self._check_contexts(contexts)
        r = torch.as_tensor(rewards).detach().to("cpu", torch.float32)
        if r.dim() != 1 or len(r) != len(x):
            raise ValueError(
                f"rewards must be 1-D with one entry per context ({len(x)}), got shape {tuple(r.shape)}"
            )
        if not torch.isfinite(r).all():
            raise ValueError("rewards must be finite")
        if len(x) == 0:
            return
        # As in the paper's Algorithm 1, Z grows with gradients at the parameters that chose the
        # arms (θ_{t-1}), i.e. before the re-fit below.
        _, g = self._mean_and_grad(x)
        if self.diagonal:
            self._z_diag += (g * g).sum(0)
        else:
            self._h = torch.cat([self._h, g.double()])
        self._x = torch.cat([self._x, x])
        self._r = torch.cat([self._r, r])
        self._w = torch.cat([self._w, torch.ones(len(r))])
        self._fit()

    def discount(self, gamma: float) -> None:
        """Weigh everything seen so far by `gamma` (in (0, 1]): the fit and Z.

        Rewards drift as the model unlearns, so an iteration's pulls should count less than the
        next one's: call this between iterations. Z becomes lam·I + Σ gamma^age · g gᵀ.
        """
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        self._w = self._w * gamma
        if self.diagonal:
            self._z_diag = (self._z_diag - self.lam) * gamma + self.lam
        else:
            self._h = self._h * math.sqrt(gamma)

    # -- state ------------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """Write the whole state to `folder`: tensors as safetensors, settings as JSON (no pickle)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"param.{i}": p.detach() for i, p in enumerate(self.params)}
        tensors |= {f"theta0.{i}": p for i, p in enumerate(self.theta0)}
        tensors |= {"h": self._h, "x": self._x, "r": self._r, "w": self._w}
        if self.diagonal:
            tensors["z_diag"] = self._z_diag
        for i, state in self._opt.state_dict()["state"].items():
            tensors |= {f"adam.{i}.{name}": value for name, value in state.items()}
        save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "bandit.safetensors")
        settings = {
            "dim": self.dim, "hidden": self.hidden, "nu": self.nu, "lam": self.lam, "seed": self.seed,
            "lr": self.lr, "fit_steps": self.fit_steps, "diagonal": self.diagonal,
        }  # fmt: skip
        (folder / "bandit.json").write_text(json.dumps(settings, indent=2) + "\n")

    @staticmethod
    def saved_in(folder: str | Path) -> bool:
        """Whether `save` wrote a bandit into `folder`."""
        return (Path(folder) / "bandit.json").is_file()

    @classmethod
    def load(cls, folder: str | Path) -> NeuralUCB:
        """The bandit `save` wrote, continuing exactly where it stopped."""
        folder = Path(folder)
        bandit = cls(**json.loads((folder / "bandit.json").read_text()))
        tensors = load_file(folder / "bandit.safetensors")
        with torch.no_grad():
            for i, p in enumerate(bandit.params):
                p.copy_(tensors[f"param.{i}"])
        bandit.theta0 = [tensors[f"theta0.{i}"] for i in range(len(bandit.params))]
        bandit._h, bandit._x, bandit._r, bandit._w = (tensors[k] for k in ("h", "x", "r", "w"))
        if bandit.diagonal:
            bandit._z_diag = tensors["z_diag"]
        opt_state = bandit._opt.state_dict()
        for key, value in tensors.items():
            if key.startswith("adam."):
                _, index, name = key.split(".")
                opt_state["state"].setdefault(int(index), {})[name] = value
        bandit._opt.load_state_dict(opt_state)
        return bandit

    def predict(self, contexts: torch.Tensor) -> torch.Tensor:
        """Mean reward estimate f(x) per row, without exploration bonus."""
        with torch.no_grad():
            return self._forward(self._check_contexts(contexts))

    # -- internals --------------------------------------------------------------------------------

    def _check_contexts(self, contexts: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(contexts)
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"contexts must have shape [n, {self.dim}], got {tuple(x.shape)}")
        x = x.detach().to("cpu", torch.float32)
        if not torch.isfinite(x).all():
            raise ValueError("contexts must be finite")
        return x

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        w1, b1, w2, b2 = self.params
        return torch.relu(x @ w1.T + b1) @ w2 + b2

    def _mean_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f(x) [n] and ∇θ f(x) / sqrt(hidden) [n, p], flattened in the order of self.params."""
        # Closed form for one hidden layer: one matmul instead of n autograd passes.
        w1, b1, w2, _ = (p.detach() for p in self.params)
        pre = x @ w1.T + b1
        act = torch.relu(pre)
        back = (pre > 0).to(x.dtype) * w2  # ∂f/∂pre
        n = len(x)
        g = torch.cat([(back[:, :, None] * x[:, None, :]).reshape(n, -1), back, act, torch.ones(n, 1)], 1)
        # The paper's 1/sqrt(m) scaling keeps gᵀZ⁻¹g, hence the bonus, O(1) as hidden grows.
        return act @ w2 + self.params[3].detach(), g / math.sqrt(self.hidden)

    def _z_solve(self, g: torch.Tensor) -> torch.Tensor:
        """Rows Z⁻¹ g_i for full Z, via Z⁻¹ = (I − Hᵀ (lam·I + H Hᵀ)⁻¹ H) / lam."""
        h = self._h
        # H Hᵀ is rebuilt on every call: O(N²·p), negligible next to the re-fit for the N (pulls)
        # a reveal run makes, and there is no stale cache to keep in step with H.
        if len(h) == 0:
            return g / self.lam
        chol = torch.linalg.cholesky(self.lam * torch.eye(len(h), dtype=h.dtype) + h @ h.T)
        return (g - torch.cholesky_solve(h @ g.T, chol).T @ h) / self.lam

    def _fit(self) -> None:
        # MSE + (lam / n)·‖θ − θ0‖²: the paper's loss per sample; the pull towards the init keeps
        # f in the regime where the gradient features (and hence Z) stay meaningful.
        reg = self.lam / len(self._r)
        losses: list[float] = []
        for _ in range(self.fit_steps):
            self._opt.zero_grad()
            # Weighted MSE: discounted pulls count less (all weights are 1 until `discount`).
            loss = torch.sum(self._w * (self._forward(self._x) - self._r) ** 2) / self._w.sum()
            loss = loss + reg * sum(((p - p0) ** 2).sum() for p, p0 in zip(self.params, self.theta0))
            loss.backward()
            self._opt.step()
            losses.append(loss.item())
            if (
                len(losses) > _PATIENCE
                and losses[-1 - _PATIENCE] - losses[-1] < _REL_TOL * losses[-1 - _PATIENCE]
            ):
                break


class UniformChoice:
    """The bandit's ablation (`reveal.policy: random`): arms drawn uniformly, rewards ignored.

    Same interface as NeuralUCB, so the reveal stage spends the same budget either way; `predict`
    is a random order, so the "best" instructions handed to sampling are random ones too.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def select(self, contexts: torch.Tensor, k: int = 1) -> list[int]:
        return self.rng.sample(range(len(contexts)), k)

    def update(self, contexts: torch.Tensor, rewards: torch.Tensor) -> None:
        pass

    def predict(self, contexts: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.rng.random() for _ in range(len(contexts))])
