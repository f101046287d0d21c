"""Recipes: one per GAN family (see base.py and RECIPE_API.md). ``RECIPES`` maps a name to its Recipe class; a config
of a new family is one recipe file, one row here and its rows in gankern/train/config.py's CONFIGS. Recipes written
outside the package join with :func:`register_recipe`."""
from .base import Batch, Env, OptSpec, Phase, Recipe  # noqa: F401
from .acgan import ACGANRecipe
from .began import BEGANRecipe
from .biggan import BigGANRecipe
from .classic import ClassicRecipe
from .cyclegan import CycleGANRecipe
from .ebgan import EBGANRecipe
from .infogan import InfoGANRecipe
from .lapgan import LAPGANRecipe
from .pggan import PGGANRecipe
from .pix2pix import Pix2PixRecipe
from .pix2pixhd import Pix2PixHDRecipe
from .singan import SinGANRecipe
from .stylegan2 import StyleGAN2Recipe
from .unrolled import UnrolledRecipe

RECIPES: dict[str, type[Recipe]] = {
    "classic": ClassicRecipe,
    "stylegan2": StyleGAN2Recipe,
    "biggan": BigGANRecipe,
    "pix2pix": Pix2PixRecipe,
    "pix2pixhd": Pix2PixHDRecipe,
    "cyclegan": CycleGANRecipe,
    "singan": SinGANRecipe,
    "acgan": ACGANRecipe,
    "infogan": InfoGANRecipe,
    "unrolled": UnrolledRecipe,
    "began": BEGANRecipe,
    "ebgan": EBGANRecipe,
    "pggan": PGGANRecipe,
    "lapgan": LAPGANRecipe,
}


def register_recipe(name: str, cls: type[Recipe]) -> type[Recipe]:
    """Make ``cls`` (a Recipe subclass, e.g. from your own module) trainable as ``RunConfig(recipe=name, ...)``;
    returns cls. Runs of it resume (and ``gankern.train.cli.load_generator`` loads them) where it is registered."""
    if not (isinstance(cls, type) and issubclass(cls, Recipe)):
        raise TypeError(f"register_recipe({name!r}, ...): expected a subclass of gankern.train.Recipe, got {cls!r}")
    RECIPES[name] = cls
    return cls
