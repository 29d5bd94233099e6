__version__ = "0.1.0"

__all__ = ['model_atoms', 'explore']


def __getattr__(name):
    "`atoms.model_atoms` (of atoms.any_agent) and `atoms.explore`, imported when first asked for."
    if name == 'model_atoms':
        from .any_agent import model_atoms   # lazy: `import atoms.games` need not load zennit
        return model_atoms
    if name == 'explore':
        from .explore import explore   # lazy: the explorer loads altair, ipywidgets and torch
        return explore
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
