"""The shapes concept families: registration, Bayes form over the shared prior, invariance by scope,
recipes, weights."""

from __future__ import annotations

import math

import composer_shapes.plugin
import pytest
import torch
from composer_shapes import ATTRIBUTES, generate
from composer_shapes.experts import FAMILIES, PRIOR_PARTS, family, load_network, make_value, prior, weights_path
from composer_shapes.nets import ChromaEnergyNet, RayChromaNet, ViewEnergyNet, build
from composer_shapes.posteriors import BayesPosterior, ColorPosterior, ValueMixture, ViewPosterior
from composer_shapes.recipe import Recipe
from composer_shapes.views import ColorBlind, ColorBlindPooled, make_view
from composer_shapes.world import COLOR_RGB

import composer
from composer.plugins import PluginManager
from composer.sampling.recipe import recipe_of


@pytest.fixture(scope="module")
def registry():
    pm = PluginManager(entry_points=False, builtins=True, disabled=())
    pm.register(composer_shapes.plugin, "shapes")
    return pm.build_registry()


@pytest.fixture(scope="module")
def images():
    return torch.from_numpy(generate(8, "all", seed=3)["x"])


def test_families_and_networks_are_registered(registry):
    assert not registry.failures
    for name, attribute in FAMILIES.items():
        assert registry.concept(name).values == tuple(ATTRIBUTES[attribute])
    assert set(registry.networks) >= {"shapes_view", "shapes_view_posterior", "shapes_color_posterior",
                                      "shapes_ray_chroma"}
    assert registry.make_expert("shapes.prior").formula() == "shapes.prior"


def test_bare_values_resolve_through_the_language(registry):
    energy = composer.parse("red & triangle & ~top_left", registry=registry)
    assert energy.formula() == "shapes.color=red & shapes.shape=triangle & ~shapes.position=top_left"
    assert energy.noise_conditional and tuple(energy.event_shape) == (3, 32, 32)


def test_values_share_the_network_and_the_prior_counts_once(images):
    red, blue = family("shapes.color")["red"], family("shapes.color")["blue"]
    triangle = make_value("shapes.shape", "triangle")
    assert red.network is blue.network and red.base is blue.base is triangle.base is prior()
    sigma = torch.full((images.shape[0],), 0.3)
    with torch.no_grad():
        p = prior()(images, sigma=sigma)
        parts = {v.label: v.likelihood(images, sigma) for v in (red, blue, triangle)}
        # one value: prior + likelihood; a product: the prior once (float32 sums: atol 1e-3 on energies ~1e3)
        torch.testing.assert_close(red(images, sigma=sigma), p + parts[red.label], rtol=1e-5, atol=1e-3)
        both = (red & ~blue & triangle)(images, sigma=sigma)
        g = blue.guidance  # the event "not blue": -g log(1 - p(blue | x)), with p = exp(-E / g)
        not_blue = -g * torch.log1p(-torch.exp(-parts[blue.label] / g))
        expected = p + parts[red.label] + not_blue + parts[triangle.label]
        torch.testing.assert_close(both, expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_likelihoods_are_normalised_posteriors(images, name):
    """sum over the values of p = exp(-E_value|x / g) is 1 at every noise level (float32: 1e-5)."""
    values = family(name).values()
    for sigma in (0.01, 0.5, 10.0):
        with torch.no_grad():
            total = sum(torch.exp(-v.likelihood(images, sigma) / v.guidance) for v in values)
        torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-5)


def test_concept_inference_reads_the_values_of_real_images():
    data = generate(32, "heldout", seed=11)  # held-out pairs: combinations no expert saw
    x = torch.from_numpy(data["x"])
    for name, attribute in FAMILIES.items():
        with torch.no_grad():
            e = torch.stack([v.likelihood(x, None) for v in family(name).values()], dim=1)
        assert (e.argmin(1).numpy() == data[attribute]).mean() >= 0.95, name


def test_colour_values_differ_only_by_their_rays(images):
    """E(x | c) = ||chroma(x) - a(x) k_c||^2 / 2 sigma^2 with one luma estimate a for all values (float64, 1e-10):
    a value enters only through its ray, so colour cannot be learned together with layout."""
    red = make_value("shapes.color", "red")
    assert isinstance(red.network, BayesPosterior) and isinstance(red.network.net, RayChromaNet)
    net = RayChromaNet(num_classes=4, width=4, depth=2).double()
    torch.nn.init.normal_(net.out.weight)  # a nonzero luma correction
    x, sigma = images.double(), torch.tensor([0.01, 0.1, 1.0, 10.0] * 2, dtype=torch.float64)
    a, k = net.ray_coefficients(x, sigma), net.chroma_rays()
    chroma = x - x.mean(dim=1, keepdim=True)
    expected = torch.stack([0.5 * (chroma - a[:, None] * k[c][None, :, None, None]).square().sum((1, 2, 3))
                            / sigma.square() for c in range(4)], dim=1)
    torch.testing.assert_close(net.energies_all(x, sigma), expected, rtol=1e-10, atol=0)
    # a reads the luma only: moving every pixel within the chroma plane leaves it unchanged
    shifted = x + 0.3 * torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)[None, :, None, None]
    torch.testing.assert_close(net.ray_coefficients(shifted, sigma), a, rtol=0, atol=1e-14)  # mean's rounding
    # one noise level as a float, a 0-d tensor or a (B,) tensor: the same energies
    same = net.energies_all(x, torch.full((8,), 0.1, dtype=torch.float64))
    for s in (0.1, torch.tensor(0.1, dtype=torch.float64)):
        torch.testing.assert_close(net.energies_all(x, s), same, rtol=1e-12, atol=0)
    torch.testing.assert_close(net(x, torch.arange(8) % 4, sigma), expected[torch.arange(8), torch.arange(8) % 4])
    # the shipped rays are the world's colours: chroma = mean * k_c, e.g. red (2, -1, -1) up to scale
    world = torch.from_numpy(COLOR_RGB).double()
    world = (world - world.mean(1, keepdim=True)) / world.mean(1, keepdim=True)
    shipped = red.network.net.chroma_rays().double()
    cos = torch.nn.functional.cosine_similarity(shipped, world, dim=1)
    assert bool((cos > 0.999).all()), cos


def test_bayes_wrappers_take_networks_without_energies_all(images):
    """A class-conditional network with only ``net(x, cond, sigma)`` (the unshipped ``shapes_chroma``) gets one
    stacked call; a network passed to ``make_value`` goes through Bayes' rule too (float32, 1e-5)."""
    torch.manual_seed(0)
    net = ChromaEnergyNet(num_classes=4, width=8, depth=2)
    sigma = torch.full((images.shape[0],), 0.5)
    with torch.no_grad():
        e = torch.stack([net(images, torch.full((images.shape[0],), c), sigma=sigma) for c in range(4)], dim=1)
        torch.testing.assert_close(BayesPosterior(net).energies_all(images, sigma), -torch.log_softmax(-e, 1))
        torch.testing.assert_close(ValueMixture(net)(images, None, sigma), math.log(4) - torch.logsumexp(-e, 1))
        blue = make_value("shapes.color", "blue", network=net)
        assert isinstance(blue.network, BayesPosterior)
        torch.testing.assert_close(blue.likelihood(images, sigma), -torch.log_softmax(-e, 1)[:, 2])


def test_colour_prior_is_the_mixture_of_the_colour_values(images):
    """E_chroma(x) = log K - logsumexp_c(-E(x | c)), so prior - log p(c | x) = E_layout + E(x | c) (float32)."""
    red = make_value("shapes.color", "red")
    mixture = prior().fn.nets[1]
    assert isinstance(mixture, ValueMixture) and mixture.net is red.network.net
    sigma = torch.full((images.shape[0],), 0.2)
    with torch.no_grad():
        e_all = mixture.net.energies_all(images, sigma)
        torch.testing.assert_close(mixture(images, None, sigma), math.log(4) - torch.logsumexp(-e_all, 1))
        layout = prior().fn.nets[0](images, None, sigma=sigma)
        torch.testing.assert_close(red(images, sigma=sigma), layout + e_all[:, 0] + math.log(4),
                                   rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("name", ["shapes.shape", "shapes.size", "shapes.position"])
def test_layout_experts_cannot_see_colour(images, name):
    """Recolouring (permuting RGB channels keeps their sum) leaves the energy unchanged (float32 rounding only)."""
    expert = next(iter(family(name).values()))
    recoloured = images[:, [2, 0, 1]]
    with torch.no_grad():
        torch.testing.assert_close(expert.likelihood(recoloured, 0.2), expert.likelihood(images, 0.2),
                                   rtol=1e-5, atol=1e-5)


def test_each_likelihood_pushes_only_what_it_sees(images):
    """Colour moves chroma only (the gradient sums to 0 over RGB); layout moves luma only (equal over RGB)."""
    x = images.clone().requires_grad_(True)
    (g_colour,) = torch.autograd.grad(make_value("shapes.color", "red").likelihood(x, 0.3).sum(), x)
    (g_shape,) = torch.autograd.grad(make_value("shapes.shape", "triangle").likelihood(x, 0.3).sum(), x)
    scale = g_colour.abs().max().item()
    assert scale > 0 and g_shape.abs().max() > 0
    torch.testing.assert_close(g_colour.sum(dim=1), torch.zeros_like(g_colour[:, 0]), rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(g_shape[:, 0], g_shape[:, 1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_shape[:, 0], g_shape[:, 2], rtol=1e-5, atol=1e-6)


def test_views():
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(ColorBlind()(x), x.sum(dim=1, keepdim=True) / math.sqrt(3))
    pooled = ColorBlindPooled(4)(x)
    assert pooled.shape == (2, 1, 8, 8)
    torch.testing.assert_close(pooled[:, 0, 0, 0], x.sum(dim=1)[:, :4, :4].mean((1, 2)) / math.sqrt(3))
    # linear: Gaussian noise of std sigma on x has std sigma in the view (1/4 after 4x4 pooling)
    z = torch.randn(4000, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    assert ColorBlind()(z).std().item() == pytest.approx(1.0, rel=0.02)
    assert ColorBlindPooled(4)(z).std().item() == pytest.approx(0.25, rel=0.05)
    assert "not which primary colour" in repr(make_view("colorblind"))
    with pytest.raises(composer.ComposerError, match="unknown view 'sepia'"):
        make_view("sepia")


@pytest.mark.parametrize("cls,kwargs", [(ViewEnergyNet, {"view": "colorblind_pool2", "num_classes": 3}),
                                        (ViewPosterior, {"num_classes": 3, "widths": [4, 8, 8, 8], "hidden": 8}),
                                        (ViewPosterior, {"num_classes": 3, "view": "identity", "widths": [4, 8]}),
                                        (ColorPosterior, {"num_classes": 4, "width": 8, "depth": 1}),
                                        (RayChromaNet, {"num_classes": 4, "width": 4, "depth": 1}),
                                        (ChromaEnergyNet, {"num_classes": 4, "width": 8, "depth": 2})])
def test_networks_rebuild_from_their_config(cls, kwargs):
    torch.manual_seed(0)
    net = cls(**kwargs)
    twin = build(net.config)
    twin.load_state_dict(net.state_dict())
    x, cond = torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 2])
    e = net(x, cond, sigma=torch.tensor([0.1, 1.0, 10.0]))
    assert e.shape == (3,) and bool((e >= 0).all())
    torch.testing.assert_close(twin(x, cond, sigma=torch.tensor([0.1, 1.0, 10.0])), e)
    with pytest.raises(ValueError, match="shape"):
        cls(**kwargs, event_shape=[1, 28, 28])


def test_energy_gradient_is_the_residual_at_large_noise():
    """With F = 0 (output layer zeroed) E = ||(1 - c_skip) x||^2 / 2 s^2: check grad exactly."""
    net = ViewEnergyNet(view="identity", num_classes=1, widths=[4, 8])
    torch.nn.init.zeros_(net.body.out.weight)
    torch.nn.init.zeros_(net.body.out.bias)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    sigma, sd = 2.0, net.sigma_data
    e = net(x, torch.zeros(2, dtype=torch.long), sigma=sigma)
    (g,) = torch.autograd.grad(e.sum(), x)
    k = sigma**2 / (sigma**2 + sd**2)
    torch.testing.assert_close(g, k**2 * x.detach() / sigma**2, rtol=1e-5, atol=1e-7)


def test_shipped_weights_load_without_pickle():
    total, kinds = 0, {}
    for name in dict.fromkeys([*FAMILIES, *PRIOR_PARTS]):
        path = weights_path(name)
        total += path.stat().st_size
        net, meta = load_network(path)
        kinds[name] = meta["config"]["type"]
        classes = 0 if name == "shapes.prior_layout" else len(ATTRIBUTES[FAMILIES[name]])
        assert net.num_classes == classes
        assert meta["recipe"]["data"]["options"]["split"] == "train"
    assert kinds == {"shapes.color": "shapes_ray_chroma", "shapes.shape": "shapes_view_posterior",
                     "shapes.size": "shapes_view_posterior", "shapes.position": "shapes_view_posterior",
                     "shapes.prior_layout": "shapes_view"}
    assert total < 4_000_000
    with pytest.raises(composer.ComposerError, match="not found"):
        load_network(weights_path(name).with_name("missing.safetensors"))


def test_recipe_ladder_and_lookup():
    r = Recipe(sigma_max=20.0, sigma_min=0.01, levels=5, steps_per_level=3)
    ladder = r.ladder()
    assert ladder[0] == pytest.approx(20.0) and ladder[-1] == pytest.approx(0.01)
    ratios = [a / b for a, b in zip(ladder, ladder[1:])]
    assert all(q == pytest.approx(2000 ** 0.25) for q in ratios)
    kwargs = r.as_kwargs()
    assert kwargs["steps"] == 15 and kwargs["step_size"] == pytest.approx(r.step_factor * 0.01**2)
    assert kwargs["predictor"] == "ddim"
    assert math.isclose(kwargs["init"](4, generator=torch.Generator().manual_seed(0)).std().item(), 20.0, rel_tol=0.1)
    energy = make_value("shapes.color", "red") & make_value("shapes.shape", "circle")
    assert recipe_of(energy)[0]["sigmas"] == make_value("shapes.color", "red").sigmas
    with pytest.raises(composer.ComposerError, match="unknown recipe setting"):
        r.replace(temperature=2)


@pytest.mark.parametrize("make,cond", [(lambda: ChromaEnergyNet(num_classes=0, width=8, depth=2), None),
                                       (lambda: RayChromaNet(num_classes=4, width=4, depth=2), [0, 1, 3])])
def test_chroma_energies_never_move_luma(make, cond):
    """A chroma energy's gradient has zero component along (1, 1, 1) at every pixel (float32 rounding)."""
    torch.manual_seed(0)
    net, cond = make(), None if cond is None else torch.tensor(cond)
    x = torch.rand(3, 3, 32, 32, requires_grad=True)
    e = net(x, cond, sigma=torch.tensor([0.05, 0.5, 5.0]))
    (g,) = torch.autograd.grad(e.sum(), x)
    assert g.abs().max() > 0
    torch.testing.assert_close(g.sum(dim=1), torch.zeros(3, 32, 32), rtol=0, atol=1e-5 * g.abs().max().item())


def test_prior_declares_its_colour_mixture_and_free_colour_is_dealt_evenly(images):
    """The prior's colour part is the 1/K mixture of the colour values (above) and the layout experts cannot
    see colour, so p(colour | layout terms) = 1/4 exactly: ``composer.sample`` deals the chains out evenly."""
    from composer.sampling.strata import strata_of, stratum_energy

    (strata,) = prior().strata
    assert strata.family == "shapes.color" and strata.shares() == dict.fromkeys(ATTRIBUTES["color"], 0.25)
    circle = make_value("shapes.shape", "circle")
    assert strata_of(circle) == (strata,) and strata_of(prior()) == (strata,)
    assert strata_of(composer.product(circle, make_value("shapes.color", "red"))) == ()
    assert strata_of(composer.product(circle, composer.Negation(make_value("shapes.color", "red")))) == ()
    from composer_shapes.evaluate import baseline_energy

    assert strata_of(baseline_energy("triangle", "red")) == ()  # the baseline's pair fixes the colour
    sigma = torch.full((images.shape[0],), 0.2)
    with torch.no_grad():  # circle & red counts the prior once: layout + E(x | red) + log 4 - log p(circle | x)
        both = stratum_energy(circle, (strata,), {"shapes.color": "red"})(images, sigma=sigma)
        want = make_value("shapes.color", "red")(images, sigma=sigma) + circle.likelihood(images, sigma)
        torch.testing.assert_close(both, want, rtol=1e-5, atol=1e-3)
    r = composer.sample(circle, n=8, seed=0, sigmas=Recipe(levels=8).ladder(), steps=16)
    x = r.x.clamp(0, 1)
    # the colour of each sample: the world colour nearest its brightest pixels' mean
    flat = x.flatten(2)
    bright = flat.gather(2, flat.sum(1, keepdim=True).topk(20, dim=2).indices.expand(-1, 3, -1)).mean(2)
    rgb = torch.as_tensor(COLOR_RGB)
    nearest = (bright[:, None, :] / bright.amax(1, keepdim=True)[:, None, :] - rgb[None]).norm(dim=2).argmin(1)
    assert sorted(nearest.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_size_strata_can_be_declared_too():
    from composer_shapes.experts import declare_strata

    from composer.sampling.strata import combinations, strata_of

    triangle = make_value("shapes.shape", "triangle")
    try:
        declare_strata("shapes.color", "shapes.size")
        cells = combinations(strata_of(triangle))
        assert len(cells) == 8 and sum(w for _, w in cells) == pytest.approx(1.0)
        assert {"shapes.color": "red", "shapes.size": "small"} in [v for v, _ in cells]
        small = make_value("shapes.size", "small")
        assert [s.family for s in strata_of(composer.product(triangle, small))] == ["shapes.color"]
        with pytest.raises(composer.ComposerError, match="unknown shapes families"):
            declare_strata("shapes.colour")
    finally:
        declare_strata("shapes.color")
    assert [s.family for s in prior().strata] == ["shapes.color"]


def test_strata_from_the_environment(monkeypatch):
    from composer_shapes.experts import STRATA, strata_families

    monkeypatch.delenv("COMPOSER_SHAPES_STRATA", raising=False)
    assert strata_families() == STRATA == ("shapes.color",)
    monkeypatch.setenv("COMPOSER_SHAPES_STRATA", "color, size")
    assert strata_families() == ("shapes.color", "shapes.size")
    monkeypatch.setenv("COMPOSER_SHAPES_STRATA", "None")
    assert strata_families() == ()
    for bad in ("colour", "", "color,,shape_x"):
        monkeypatch.setenv("COMPOSER_SHAPES_STRATA", bad)
        with pytest.raises(composer.ComposerError, match="COMPOSER_SHAPES_STRATA"):
            strata_families()
