export const metadata = {
  title: "Recordings gateway: Next.js example",
  description: "Play a meeting recording with seeking, through a Next.js route handler",
  icons: { icon: "data:," }, // no favicon request
};

export default function RootLayout({ children }) {
  return (
    <html lang="en">
      <body style={{ fontFamily: "system-ui, sans-serif", maxWidth: "40rem", margin: "2rem auto", padding: "0 1rem" }}>
        {children}
      </body>
    </html>
  );
}
