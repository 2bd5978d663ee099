"""`python app.py` is `prodops serve`: the Bolt app behind gunicorn on PORT (or Socket Mode)."""

from bot.cli import main

if __name__ == "__main__":
    main(["serve"])
