"""The assistant: model providers behind the `actors.provider.Provider` protocol."""
