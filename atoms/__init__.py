__version__ = "0.1.0"

__all__ = ['model_atoms']


def __getattr__(name):
    "`atoms.model_atoms` (of atoms.any_agent), imported when first asked for."
    if name == 'model_atoms':
        from .any_agent import model_atoms   # lazy: `import atoms.games` need not load zennit
        return model_atoms
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
