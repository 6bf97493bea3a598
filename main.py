"""Train or test a model from OmegaConf configs, with the command line of CompVis `main.py`.

    python main.py --base configs/ldm/celebahq.yaml -t --gpus 0,1
    python main.py -r logs/2026-01-01T00-00-00_celebahq        # resume
    python main.py --base a.yaml b.yaml -t model.params.timesteps=500   # merge + override

Configs merge left to right, then `key.sub=value` words override the result. The run's
folder is `<logdir>/<YYYY-MM-DDTHH-MM-SS>_<name>/` with `checkpoints/`, `configs/` and `images/`.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import logging
import os
import sys
from typing import Any

from omegaconf import OmegaConf

from ldm.trainer_options import add_trainer_args, str2bool

logger = logging.getLogger("main")

# The original main.py defined these; released configs name them as `main.<Class>`.
from ldm.callbacks.cuda import CUDACallback  # noqa: E402,F401
from ldm.callbacks.image_logger import ImageLogger  # noqa: E402,F401
from ldm.callbacks.setup import SetupCallback  # noqa: E402,F401
from ldm.data.datamodule import DataModuleFromConfig, WrappedDataset  # noqa: E402,F401


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--name", type=str, const=True, default="", nargs="?", help="postfix for logdir")
    parser.add_argument("-r", "--resume", type=str, const=True, default="", nargs="?",
                        help="resume from a log dir or a checkpoint inside one")
    parser.add_argument("-b", "--base", nargs="*", metavar="base_config.yaml", default=list(),
                        help="paths to base configs, merged left to right; `key=value` words override them")
    parser.add_argument("-t", "--train", type=str2bool, const=True, default=False, nargs="?", help="train")
    parser.add_argument("--no-test", type=str2bool, const=True, default=False, nargs="?", help="disable test")
    parser.add_argument("-p", "--project", help="name of new or path to existing project")
    parser.add_argument("-d", "--debug", type=str2bool, nargs="?", const=True, default=False,
                        help="debug mode: full tracebacks, run folder moved to debug_runs/")
    parser.add_argument("-s", "--seed", type=int, default=23, help="seed for seed_everything")
    parser.add_argument("-f", "--postfix", type=str, default="", help="post-postfix for default name")
    parser.add_argument("-l", "--logdir", type=str, default="logs", help="directory for logging")
    parser.add_argument("--scale_lr", type=str2bool, nargs="?", const=True, default=True,
                        help="scale base-lr by ngpu * batch_size * n_accumulate")
    parser.add_argument("--finetune_from", type=str, default="",
                        help="initialise the model weights from this checkpoint (new optimizer, step 0)")
    parser.add_argument("--use-ema-weights", dest="use_ema_weights", action="store_true",
                        help="with --finetune_from: take the EMA weights stored in the checkpoint")
    parser.add_argument("--unsafe-pickle", dest="unsafe_pickle", action="store_true",
                        help="allow checkpoints whose pickle runs code (only for files you trust)")
    add_trainer_args(parser)
    return parser


def resolve_run(opt: argparse.Namespace, now: str) -> tuple[str, str, str | None]:
    """(logdir, nowname, resume checkpoint) as the original computes them."""
    if opt.name and opt.resume:
        raise SystemExit("error: -n/--name and -r/--resume cannot be given together")
    if opt.resume:
        if not os.path.exists(opt.resume):
            raise SystemExit(f"error: cannot find {opt.resume} to resume from")
        if os.path.isfile(opt.resume):
            ckpt = opt.resume
            logdir = os.path.dirname(os.path.dirname(os.path.abspath(opt.resume)))
        else:
            logdir = opt.resume.rstrip("/")
            ckpt = os.path.join(logdir, "checkpoints", "last.ckpt")
            if not os.path.isfile(ckpt):
                raise SystemExit(f"error: {ckpt} does not exist: nothing to resume in {logdir}")
        opt.base = sorted(glob.glob(os.path.join(logdir, "configs", "*.yaml"))) + list(opt.base)
        return logdir, os.path.basename(os.path.normpath(logdir)), ckpt
    if os.environ.get("LDM_RUN_LOGDIR") and int(os.environ.get("LOCAL_RANK", "0")) > 0:
        logdir = os.environ["LDM_RUN_LOGDIR"]  # DDP worker started by Lightning: rank 0's folder
        return logdir, os.path.basename(logdir), None
    if opt.name:
        name = "_" + opt.name
    elif opt.base:
        name = "_" + os.path.splitext(os.path.basename(opt.base[0]))[0]
    else:
        name = ""
    nowname = now + name + opt.postfix
    return os.path.join(opt.logdir, nowname), nowname, None


def check_resume_checkpoint(path: str, unsafe_pickle: bool) -> None:
    """Refuse weights-only files for -r: they hold no optimizer or loop state to resume."""
    from ldm.checkpoint import is_training_checkpoint, load_checkpoint

    checkpoint = load_checkpoint(path, unsafe_pickle=unsafe_pickle)
    if not is_training_checkpoint(checkpoint):
        raise SystemExit(
            f"error: {path} holds weights only (no optimizer or step state), so it cannot be resumed; "
            "to start training from it use --finetune_from"
        )


def finetune_from(model: Any, path: str, unsafe_pickle: bool, use_ema: bool, ignore_keys: Any) -> None:
    """Load weights (not the training state) into `model`, strictly."""
    from ldm.checkpoint import load_checkpoint, load_state_dict_into

    checkpoint = load_checkpoint(path, unsafe_pickle=unsafe_pickle)
    state_dict = checkpoint.get("state_dict", checkpoint)
    load_state_dict_into(model, state_dict, ignore_keys=list(ignore_keys or ()), use_ema=use_ema)
    logger.info("initialised weights from %s", path)


def build_logger(lightning_config: Any, logdir: str, nowname: str, debug: bool) -> Any:
    """The config's `lightning.logger`, else TensorBoard when installed, else CSV."""
    from ldm.util import instantiate_from_config

    if "logger" in lightning_config:
        cfg = OmegaConf.merge({"params": {"save_dir": logdir}}, lightning_config.logger)
        return instantiate_from_config(cfg, path="lightning.logger")
    try:
        import tensorboard  # noqa: F401

        target = "lightning.pytorch.loggers.TensorBoardLogger"
        params = {"save_dir": logdir, "name": "tensorboard", "version": ""}
    except ImportError:
        target = "lightning.pytorch.loggers.CSVLogger"
        params = {"save_dir": logdir, "name": "csv", "version": ""}
    return instantiate_from_config({"target": target, "params": params}, path="lightning.logger")


def build_callbacks(lightning_config: Any, model: Any, opt: argparse.Namespace, now: str, logdir: str,
                    ckptdir: str, cfgdir: str, config: Any) -> list:
    """Setup, image logging, LR monitor, CUDA stats, checkpointing and the crash checkpoint."""
    from ldm.callbacks.interrupt import CheckpointOnInterrupt
    from ldm.util import instantiate_from_config

    ckpt_cfg = {"target": "lightning.pytorch.callbacks.ModelCheckpoint",
                "params": {"dirpath": ckptdir, "filename": "{epoch:06}", "verbose": True, "save_last": True}}
    if getattr(model, "monitor", None):
        logger.info("monitoring %s as checkpoint metric", model.monitor)
        ckpt_cfg["params"].update(monitor=model.monitor, save_top_k=3)
    ckpt_cfg = OmegaConf.merge(ckpt_cfg, lightning_config.get("modelcheckpoint", OmegaConf.create()))
    defaults = {
        "setup_callback": {"target": "ldm.callbacks.setup.SetupCallback",
                           "params": {"resume": bool(opt.resume), "now": now, "logdir": logdir, "ckptdir": ckptdir,
                                      "cfgdir": cfgdir, "config": config, "lightning_config": lightning_config}},
        "image_logger": {"target": "ldm.callbacks.image_logger.ImageLogger",
                         "params": {"batch_frequency": 750, "max_images": 4, "clamp": True}},
        "learning_rate_logger": {"target": "lightning.pytorch.callbacks.LearningRateMonitor",
                                 "params": {"logging_interval": "step"}},
        "cuda_callback": {"target": "ldm.callbacks.cuda.CUDACallback"},
    }
    callbacks_cfg = OmegaConf.merge(defaults, lightning_config.get("callbacks", OmegaConf.create()))
    callbacks = [instantiate_from_config(callbacks_cfg[k], path=f"lightning.callbacks.{k}") for k in callbacks_cfg]
    callbacks.append(instantiate_from_config(ckpt_cfg, path="lightning.modelcheckpoint"))
    callbacks.append(CheckpointOnInterrupt(ckptdir))
    return callbacks


def build_strategy(kwargs: dict, lightning_config: Any) -> None:
    """A `lightning.strategy` node ({target, params}) becomes the Trainer's strategy object."""
    from ldm.util import instantiate_from_config

    if "strategy" in lightning_config and "strategy" not in kwargs:
        kwargs["strategy"] = instantiate_from_config(lightning_config.strategy, path="lightning.strategy")


def run(opt: argparse.Namespace, unknown: list[str]) -> None:
    import lightning.pytorch as pl

    from ldm.checkpoint_io import AtomicCheckpointIO
    from ldm.trainer_options import devices_per_node, given_trainer_args, trainer_kwargs
    from ldm.util import instantiate_from_config

    now = datetime.datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
    sys.path.append(os.getcwd())
    logdir, nowname, resume_ckpt = resolve_run(opt, now)
    ckptdir, cfgdir = os.path.join(logdir, "checkpoints"), os.path.join(logdir, "configs")
    pl.seed_everything(opt.seed, workers=True)

    for path in opt.base:
        if not os.path.isfile(path):
            raise SystemExit(f"error: config file not found: {path}")
    configs = [OmegaConf.load(path) for path in opt.base]
    config = OmegaConf.merge(*configs, OmegaConf.from_dotlist(unknown))
    if "model" not in config:
        raise SystemExit("error: the merged config has no 'model' section (give it with --base)")
    lightning_config = config.pop("lightning", OmegaConf.create())
    trainer_cfg = lightning_config.get("trainer", OmegaConf.create())
    cli_trainer = given_trainer_args(opt)
    for k, v in cli_trainer.items():  # saved with the run, so that -r restores them
        trainer_cfg[k] = v
    lightning_config.trainer = trainer_cfg
    kwargs = trainer_kwargs(OmegaConf.to_container(trainer_cfg, resolve=True), {})
    build_strategy(kwargs, lightning_config)

    if resume_ckpt:
        check_resume_checkpoint(resume_ckpt, opt.unsafe_pickle)
    model = instantiate_from_config(config.model, path="model")
    if opt.finetune_from:
        finetune_from(model, opt.finetune_from, opt.unsafe_pickle, opt.use_ema_weights,
                      config.model.get("params", {}).get("ignore_keys", ()))

    # Lightning 2 refuses gradient clipping / accumulation with manual optimization (the GAN
    # autoencoders): hand them to the model, which applies them in its training_step.
    accumulate = int(kwargs.get("accumulate_grad_batches", 1))
    # Their two optimizers each leave the other's parameters without gradients, so DDP has to
    # look for unused parameters.
    if not model.automatic_optimization:
        for key in ("gradient_clip_val", "gradient_clip_algorithm", "accumulate_grad_batches"):
            if key in kwargs:
                setattr(model, key, kwargs.pop(key))
        if kwargs.get("strategy") == "ddp":
            kwargs["strategy"] = "ddp_find_unused_parameters_true"

    data = instantiate_from_config(config.data, path="data") if "data" in config else None
    if data is not None:
        data.prepare_data()
        data.setup()
        for split, dataset in getattr(data, "datasets", {}).items():
            try:
                logger.info("data %s: %s, %d samples", split, type(dataset).__name__, len(dataset))
            except TypeError:
                logger.info("data %s: %s (iterable)", split, type(dataset).__name__)

    base_lr = config.model.get("base_learning_rate", None)
    if base_lr is not None:
        bs = config.data.params.batch_size if data is not None else 1
        ngpu = devices_per_node(kwargs)
        if opt.scale_lr:
            model.learning_rate = accumulate * ngpu * bs * base_lr
            logger.info("Setting learning rate to %.2e = %d (accumulate_grad_batches) * %d (num_gpus) * %d "
                        "(batchsize) * %.2e (base_lr)", model.learning_rate, accumulate, ngpu, bs, base_lr)
        else:
            model.learning_rate = base_lr
            logger.info("++++ NOT USING LR SCALING ++++ Setting learning rate to %.2e", model.learning_rate)

    callbacks = build_callbacks(lightning_config, model, opt, now, logdir, ckptdir, cfgdir, config)
    strategy = kwargs.get("strategy", "auto")
    plugins = [AtomicCheckpointIO(unsafe_pickle=opt.unsafe_pickle)] if isinstance(strategy, str) and not any(
        s in strategy for s in ("deepspeed", "fsdp")) else []
    os.environ["LDM_RUN_LOGDIR"] = logdir  # DDP workers re-run this script: share rank 0's folder
    trainer = pl.Trainer(**kwargs, logger=build_logger(lightning_config, logdir, nowname, opt.debug),
                         callbacks=callbacks, plugins=plugins, default_root_dir=logdir)

    try:
        if opt.train:
            trainer.fit(model, data, ckpt_path=resume_ckpt)
        has_test = data is not None and "test" in getattr(data, "dataset_configs", {})
        if not opt.no_test and not trainer.interrupted and has_test:
            trainer.test(model, data)
    finally:
        if opt.debug and not opt.resume and trainer.global_rank == 0 and os.path.isdir(logdir):
            dst = os.path.join(os.path.dirname(logdir), "debug_runs", os.path.basename(logdir))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.rename(logdir, dst)


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    opt, unknown = parser.parse_known_args(argv)
    bad = [w for w in unknown if "=" not in w or w.startswith("-")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if opt.debug:
        run(opt, unknown)
        return 0
    from ldm.util import ConfigError

    try:
        from ldm.checkpoint import CheckpointError
    except ImportError:  # pragma: no cover - the checkpoint module is part of the package
        CheckpointError = ConfigError
    try:
        run(opt, unknown)
    except (ConfigError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
