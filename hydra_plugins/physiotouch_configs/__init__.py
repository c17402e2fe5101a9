"""physiotouch's config nodes, registered wherever Hydra composes.

Hydra imports every module under `hydra_plugins` when it builds a config search path: for `@hydra.main`, for
`hydra.compose` under any `initialize_*`, for the sweeper's jobs and for a user's own app. Importing this one
stores the settings dataclasses' nodes and the resolvers that `physiotouch/conf` reads
(`physiotouch.hydra_setup.register_with_hydra`), so the config tree composes from any entry point without a
registration call.
"""

from physiotouch.hydra_setup import register_with_hydra

register_with_hydra()
