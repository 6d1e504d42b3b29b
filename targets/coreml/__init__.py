"""Core ML: conversion to ML programs (convert.py), reading a saved .mlpackage (program.py), the
target with its macOS and host runners (target.py), and a NumPy executor of the saved program
for machines without Core ML (host_executor/)."""
