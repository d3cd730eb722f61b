"""Run the CLI from a checkout without installing it: ``python cli.py --help``.

The CLI itself is ``cpcdrl_deploy/cli.py``; the installed ``cpcdrl`` command calls it directly.
"""

from cpcdrl_deploy.cli import app, main

__all__ = ["app", "main"]

if __name__ == "__main__":
    main()
