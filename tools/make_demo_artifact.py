"""Write the tiny demo artifact `artifacts/demo/` that the placeholder results chapter reads.

    .venv/bin/python tools/make_demo_artifact.py

The table is real but small: the number of trainable parameters in each layer of the paper's
actor-critic network (`atoms.nets.NATURE`) and of the small variant (`atoms.nets.SMALL`), counted
from the modules themselves. No training, no randomness (parameters are counted, not initialised).
"""
import sys
from pathlib import Path
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from atoms.core import artifacts_dir, save_table, write_manifest
from atoms.nets import NATURE, SMALL, ActorCritic
from torch import nn

COMMAND = 'python tools/make_demo_artifact.py'


def layer_table(name, cfg) -> pd.DataFrame:
    "One row per weight layer of `ActorCritic(cfg)`: its role, output units and parameter count."
    net = ActorCritic(cfg)
    convs = [m for m in net.body.modules() if isinstance(m, nn.Conv2d)]
    layers = [(f'conv{i+1}', m, m.out_channels) for i, m in enumerate(convs)]
    layers += [('F_c', net.fc[0], net.fc[0].out_features), ('policy', net.head, net.head.out_features),
               ('value', net.value, net.value.out_features)]
    return pd.DataFrame(dict(net=name, layer=[l for l, _, _ in layers], order=range(len(layers)),
                             units=[u for _, _, u in layers],
                             params=[sum(p.numel() for p in m.parameters()) for _, m, _ in layers])).astype(
                                 dict(order='int64', units='int64', params='int64'))


def main(folder=None):
    folder = Path(folder) if folder else artifacts_dir()/'demo'
    df = pd.concat([layer_table('nature', NATURE), layer_table('small', SMALL)], ignore_index=True)
    save_table(df, folder/'net_params.parquet')
    return write_manifest(folder, command=COMMAND, config=dict(nets=['NATURE', 'SMALL'], kind='actor_critic'),
                          seed=None, description='trainable parameters per layer of the actor-critic networks')


if __name__ == '__main__':
    m = main(*sys.argv[1:])
    print(f"wrote {len(m['files'])} file(s) + manifest.json, git {m['git_revision']}")
