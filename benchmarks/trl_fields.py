"""Print docs/trl.md's table: every field of the installed trl's RewardConfig and what reward does with it.

python benchmarks/trl_fields.py        # needs the bench extra (trl); reward itself never imports trl
"""

from dataclasses import fields

from trl import RewardConfig

from reward.integrations.trl_options import table

if __name__ == "__main__":
    print(table([f.name for f in fields(RewardConfig)]))
