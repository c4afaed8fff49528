"""Prompt families and their answer rules: plain, harmony (gpt-oss), think, and --tir's tool."""
