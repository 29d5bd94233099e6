"""Packaging: every field comes from settings.ini (nbdev 2), so the two never disagree."""
from configparser import ConfigParser
from setuptools import setup, find_packages

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini')
c = cfg['DEFAULT']

setup(
    name=c['lib_name'], version=c['version'], description=c['description'],
    author=c['author'], license='Apache-2.0', python_requires='>=' + c['min_python'],
    packages=find_packages(include=[c['lib_path'], c['lib_path'] + '.*']),
    install_requires=c['requirements'].split(),
    extras_require={'dev': c['dev_requirements'].split()},
    entry_points={'console_scripts': [s.replace('=', ' = ', 1) for s in c['console_scripts'].split()]},
    zip_safe=False,
)
