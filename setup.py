import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(r'^__version__ = "([^"]+)"', (HERE / "peewee_sessions.py").read_text(), re.M).group(1)

setup(
    name="peewee-sessions",
    version=VERSION,
    description="Server-side HTTP sessions in your SQL database through Peewee, compatible with express-session",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    py_modules=["peewee_sessions"],
    python_requires=">=3.9",
    install_requires=["peewee>=3.17"],
    extras_require={
        "postgres": ["psycopg2-binary"],
        "mysql": ["pymysql"],
        "bottle": ["bottle>=0.13"],
    },
    entry_points={"console_scripts": ["peewee-sessions = peewee_sessions:main"]},
    license="MIT",
    classifiers=[
        "Framework :: Bottle",
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: WWW/HTTP :: Session",
        "Topic :: Database",
    ],
)
